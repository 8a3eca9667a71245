/**
 * Pretrained backbones featcache knows how to fetch, as frozen data. `sha256` and `size` are verified when known;
 * an entry without them is pinned on first download (its hash is written beside the model and checked later).
 */
export interface ModelSource {
  readonly name: string;
  readonly description: string;
  readonly url: string;
  readonly file: string;
  readonly sha256: string | null;
  readonly size: number | null;
  readonly preset: string;
  readonly dim: number;
}

const zoo = 'https://github.com/onnx/models/raw/main/validated/vision/classification';

export const MODEL_SOURCES: Readonly<Record<string, ModelSource>> = Object.freeze({
  resnet50: Object.freeze({
    name: 'resnet50',
    description: 'ResNet50 v1, ImageNet-pretrained, ONNX Model Zoo (opset 7); torchvision preprocessing; 2048-d pool',
    url: `${zoo}/resnet/model/resnet50-v1-7.onnx`,
    file: 'resnet50.onnx',
    sha256: null,
    size: null,
    preset: 'torchvision',
    dim: 2048,
  }),
  'mobilenetv2-int8': Object.freeze({
    name: 'mobilenetv2-int8',
    description: 'MobileNetV2, ImageNet-pretrained, int8 QOperator, ONNX Model Zoo (opset 12); 1280-d pool',
    url: `${zoo}/mobilenet/model/mobilenetv2-12-int8.onnx`,
    file: 'mobilenetv2-12-int8.onnx',
    sha256: '83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f',
    size: 3_655_640,
    preset: 'torchvision',
    dim: 1280,
  }),
});

export const MODEL_NAMES: readonly string[] = Object.freeze(Object.keys(MODEL_SOURCES));

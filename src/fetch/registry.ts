/**
 * Pretrained backbones featcache knows how to fetch, as frozen data. `sha256` and `size` are verified when known;
 * an entry without them is pinned on first download (its hash is written beside the model and checked later).
 *
 * Sources are tried in order. github.com/onnx/models is no longer maintained and its Git LFS bandwidth quota runs
 * out (onnx/models#317), so the maintained Hugging Face mirror (huggingface.co/onnxmodelzoo, one repository per
 * model) comes first and GitHub is the fallback.
 */
export interface ModelSource {
  readonly name: string;
  readonly description: string;
  /** Download URLs, tried in order until one gives a verified file. */
  readonly urls: readonly string[];
  readonly file: string;
  readonly sha256: string | null;
  readonly size: number | null;
  readonly preset: string;
  readonly dim: number;
}

const huggingFace = (model: string) => `https://huggingface.co/onnxmodelzoo/${model}/resolve/main/${model}.onnx`;
const github = 'https://github.com/onnx/models/raw/main/validated/vision/classification';

export const MODEL_SOURCES: Readonly<Record<string, ModelSource>> = Object.freeze({
  resnet50: Object.freeze({
    name: 'resnet50',
    description: 'ResNet50 v1, ImageNet-pretrained, ONNX Model Zoo (opset 7); torchvision preprocessing; 2048-d pool',
    urls: Object.freeze([huggingFace('resnet50-v1-7'), `${github}/resnet/model/resnet50-v1-7.onnx`]),
    file: 'resnet50.onnx',
    sha256: null,
    size: null,
    preset: 'torchvision',
    dim: 2048,
  }),
  'mobilenetv2-int8': Object.freeze({
    name: 'mobilenetv2-int8',
    description: 'MobileNetV2, ImageNet-pretrained, int8 QOperator, ONNX Model Zoo (opset 12); 1280-d pool',
    urls: Object.freeze([huggingFace('mobilenetv2-12-int8'), `${github}/mobilenet/model/mobilenetv2-12-int8.onnx`]),
    file: 'mobilenetv2-12-int8.onnx',
    sha256: '83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f',
    size: 3_655_640,
    preset: 'torchvision',
    dim: 1280,
  }),
});

export const MODEL_NAMES: readonly string[] = Object.freeze(Object.keys(MODEL_SOURCES));

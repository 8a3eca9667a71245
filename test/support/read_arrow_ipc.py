"""An Arrow IPC file reader independent of apache-arrow JS, for tests: python3 + numpy, flatbuffers decoded by hand.

Reads files whose schema is featcache's part/export schema (path, label, label_name, split, file_size,
file_mtime_ms: Utf8/Int32/Float64 columns, feature: FixedSizeList<Float32>) — the buffer layout follows the Arrow
columnar spec (validity bitmap, then offsets/values per field, depth first). Prints JSON:
{"metadata": {...schema key-values...}, "rows": [{"path", "label", "label_name", "split", "feature"}, ...]}.
Usage: python3 read_arrow_ipc.py FILE...
"""
import json
import struct
import sys

import numpy as np


class Table:
    """A flatbuffer table at `pos` of `buf`."""

    def __init__(self, buf, pos):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from('<i', buf, pos)[0]
        self.vsize = struct.unpack_from('<H', buf, self.vtable)[0]

    def offset(self, field):
        o = 4 + 2 * field
        return struct.unpack_from('<H', self.buf, self.vtable + o)[0] if o < self.vsize else 0

    def scalar(self, field, fmt, default=0):
        o = self.offset(field)
        return struct.unpack_from(fmt, self.buf, self.pos + o)[0] if o else default

    def indirect(self, field):
        o = self.offset(field)
        if not o:
            return None
        at = self.pos + o
        return at + struct.unpack_from('<I', self.buf, at)[0]

    def table(self, field):
        at = self.indirect(field)
        return Table(self.buf, at) if at is not None else None

    def vector(self, field):
        """(start, length) of a vector field."""
        at = self.indirect(field)
        if at is None:
            return at, 0
        return at + 4, struct.unpack_from('<I', self.buf, at)[0]

    def tables(self, field):
        start, n = self.vector(field)
        return [Table(self.buf, start + 4 * i + struct.unpack_from('<I', self.buf, start + 4 * i)[0]) for i in range(n)]

    def string(self, field):
        at = self.indirect(field)
        if at is None:
            return None
        n = struct.unpack_from('<I', self.buf, at)[0]
        return bytes(self.buf[at + 4:at + 4 + n]).decode('utf-8')


def read(path):
    buf = open(path, 'rb').read()
    assert buf[:6] == b'ARROW1' and buf[-6:] == b'ARROW1', 'not an Arrow IPC file'
    footer_len = struct.unpack_from('<i', buf, len(buf) - 10)[0]
    footer_pos = len(buf) - 10 - footer_len
    fb = buf[footer_pos:footer_pos + footer_len]
    footer = Table(fb, struct.unpack_from('<I', fb, 0)[0])
    schema = footer.table(1)
    metadata = {kv.string(0): kv.string(1) for kv in schema.tables(2)}
    names = [f.string(0) for f in schema.tables(1)]
    # content_sha256 (parts from 0.3 on) comes after feature, so the buffers read below keep their positions.
    assert names[:7] == ['path', 'label', 'label_name', 'split', 'file_size', 'file_mtime_ms', 'feature'], names
    dim = schema.tables(1)[6].table(3).scalar(0, '<i')  # FixedSizeList.listSize
    start, nblocks = footer.vector(3)
    rows = []
    for b in range(nblocks):
        offset, meta_len, _pad, body_len = struct.unpack_from('<qiiq', fb, start + 24 * b)
        at = offset
        if struct.unpack_from('<I', buf, at)[0] == 0xFFFFFFFF:
            at += 4
        size = struct.unpack_from('<i', buf, at)[0]
        mb = buf[at + 4:at + 4 + size]
        message = Table(mb, struct.unpack_from('<I', mb, 0)[0])
        assert message.scalar(1, '<B') == 3, 'not a record batch'  # MessageHeader.RecordBatch
        batch = message.table(2)
        n = batch.scalar(0, '<q')
        bstart, nbuf = batch.vector(2)
        body = offset + meta_len
        buffers = [struct.unpack_from('<qq', mb, bstart + 16 * i) for i in range(nbuf)]
        data = [buf[body + o:body + o + length] for o, length in buffers]
        assert batch.offset(3) == 0, 'compressed batches are not supported here'

        def valid(buffer):
            if len(buffer) == 0:
                return np.ones(n, dtype=bool)
            return np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder='little')[:n].astype(bool)

        def strings(validity, offsets, values):
            o = np.frombuffer(offsets, dtype='<i4')[:n + 1]
            ok = valid(validity)
            return [bytes(values[o[i]:o[i + 1]]).decode('utf-8') if ok[i] else None for i in range(n)]

        paths = strings(data[0], data[1], data[2])
        label_ok = valid(data[3])
        labels = np.frombuffer(data[4], dtype='<i4')[:n]
        label_names = strings(data[5], data[6], data[7])
        splits = strings(data[8], data[9], data[10])
        features = np.frombuffer(data[17], dtype='<f4')[:n * dim].reshape(n, dim)
        for i in range(n):
            rows.append({'path': paths[i], 'label': int(labels[i]) if label_ok[i] else None, 'label_name': label_names[i],
                         'split': splits[i], 'feature': features[i].astype(float).tolist()})
    return {'metadata': metadata, 'rows': rows}


if __name__ == '__main__':
    print(json.dumps([read(p) for p in sys.argv[1:]]))

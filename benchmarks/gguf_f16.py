"""Write an F16 copy of a GGUF model (matrices dequantised to float16, the rest float32, the same
metadata), for `bench_real.py --gguf`: llama.cpp's batching gains depend on whether a step is bound
by reading weights (F16) or by dequantising them (Q4_1 on a few cores).

    python benchmarks/gguf_f16.py SOURCE.gguf TARGET.gguf
"""

from __future__ import annotations

import argparse

import gguf
import numpy as np
from gguf.quants import dequantize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args()
    reader = gguf.GGUFReader(args.source)
    writer = gguf.GGUFWriter(args.target, reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by the writer itself
        value = int(gguf.LlamaFileType.MOSTLY_F16) if name == "general.file_type" else field.contents()
        kind = field.types[0]
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, kind, sub_type=sub_type)
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape))
        data = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32).reshape(shape)
        writer.add_tensor(tensor.name, data.astype(np.float16) if data.ndim == 2 else data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()

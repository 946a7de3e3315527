# ggml's own quantizer and dequantizer (llama.cpp's libggml-base, as node-llama-cpp ships it), through ctypes:
#   python3 ggml_blocks.py LIB TYPE IN.f32 ROW
# quantizes the f32 values in IN.f32 (rows of ROW elements) to TYPE with ggml_quantize_chunk, writes the blocks
# to IN.f32.TYPE and ggml's to_float of them to IN.f32.TYPE.f32. COMET's dequantize must give the same floats.
import ctypes, sys

lib_path, name, src, row = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
GGML_TYPE = {'Q4_0': 2, 'Q8_0': 8, 'Q4_K': 12, 'Q6_K': 14}[name]

class Traits(ctypes.Structure):  # struct ggml_type_traits (ggml.h), the fields up to to_float
    _fields_ = [('type_name', ctypes.c_char_p), ('blck_size', ctypes.c_int64), ('blck_size_interleave', ctypes.c_int64),
                ('type_size', ctypes.c_size_t), ('is_quantized', ctypes.c_bool), ('to_float', ctypes.c_void_p)]

lib = ctypes.CDLL(lib_path)
lib.ggml_get_type_traits.restype = ctypes.POINTER(Traits)
lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
lib.ggml_quantize_chunk.restype = ctypes.c_size_t
lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
tr = lib.ggml_get_type_traits(GGML_TYPE).contents
assert tr.type_name.decode().upper() == name, (tr.type_name, name)  # the struct layout is the one read above

data = open(src, 'rb').read()
n = len(data) // 4
x = (ctypes.c_float * n).from_buffer_copy(data)
out = (ctypes.c_uint8 * (n // tr.blck_size * tr.type_size))()
size = lib.ggml_quantize_chunk(GGML_TYPE, x, out, 0, n // row, row, None)
assert size == len(out), (size, len(out))
y = (ctypes.c_float * n)()
ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(tr.to_float)(out, y, n)
open(f'{src}.{name}', 'wb').write(bytes(out))
open(f'{src}.{name}.f32', 'wb').write(bytes(y))

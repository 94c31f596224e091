#include "core/dtype.hpp"

namespace tpcoll {

std::size_t dtype_size(tpcoll_dtype_t dtype) {
  switch (dtype) {
    case TPCOLL_FLOAT8_E4M3:
    case TPCOLL_FLOAT8_E5M2:
    case TPCOLL_INT8:
    case TPCOLL_UINT8:
      return 1;
    case TPCOLL_FLOAT16:
    case TPCOLL_BFLOAT16:
      return 2;
    case TPCOLL_FLOAT32:
    case TPCOLL_INT32:
      return 4;
    case TPCOLL_FLOAT64:
    case TPCOLL_INT64:
      return 8;
  }
  return 0;
}

const char* dtype_name(tpcoll_dtype_t dtype) {
  switch (dtype) {
    case TPCOLL_FLOAT32: return "float32";
    case TPCOLL_FLOAT16: return "float16";
    case TPCOLL_BFLOAT16: return "bfloat16";
    case TPCOLL_FLOAT64: return "float64";
    case TPCOLL_FLOAT8_E4M3: return "float8_e4m3";
    case TPCOLL_FLOAT8_E5M2: return "float8_e5m2";
    case TPCOLL_INT8: return "int8";
    case TPCOLL_UINT8: return "uint8";
    case TPCOLL_INT32: return "int32";
    case TPCOLL_INT64: return "int64";
  }
  return "unknown";
}

bool is_reducible(tpcoll_dtype_t dtype) {
  return dtype == TPCOLL_FLOAT32 || dtype == TPCOLL_FLOAT16 || dtype == TPCOLL_BFLOAT16;
}

}  // namespace tpcoll

// Element i of a float32/float16/bfloat16 buffer, widened to float or set
// from one (the host side of the GPU tests' expected results).
#pragma once

#include "common/numerics.hpp"

#include <tpcoll/tpcoll.h>

#include <cstddef>
#include <cstdint>

inline float widen(tpcoll_dtype_t d, const std::byte* p, std::size_t i) {
  namespace nx = tpcoll::numerics;
  switch (d) {
    case TPCOLL_FLOAT32: return reinterpret_cast<const float*>(p)[i];
    case TPCOLL_FLOAT16: return nx::fp16_to_float(reinterpret_cast<const std::uint16_t*>(p)[i]);
    default: return nx::bf16_to_float(reinterpret_cast<const std::uint16_t*>(p)[i]);
  }
}

inline void narrow(tpcoll_dtype_t d, std::byte* p, std::size_t i, float v) {
  namespace nx = tpcoll::numerics;
  switch (d) {
    case TPCOLL_FLOAT32: reinterpret_cast<float*>(p)[i] = v; break;
    case TPCOLL_FLOAT16: reinterpret_cast<std::uint16_t*>(p)[i] = nx::float_to_fp16(v); break;
    default: reinterpret_cast<std::uint16_t*>(p)[i] = nx::float_to_bf16(v); break;
  }
}

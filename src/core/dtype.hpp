// Element sizes and names of tpcoll_dtype_t.
#pragma once

#include <tpcoll/tpcoll.h>

#include <cstddef>

namespace tpcoll {

// 0 for a value outside the enum.
std::size_t dtype_size(tpcoll_dtype_t dtype);
const char* dtype_name(tpcoll_dtype_t dtype);
// The dtypes all-reduce and the fused op accept: float32, float16, bfloat16.
bool is_reducible(tpcoll_dtype_t dtype);

}  // namespace tpcoll

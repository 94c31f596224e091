// The record of one call that ranks compare: plain data with no C++20
// dependencies, so that device code (CUDA kernels publish theirs) can hold it.
#pragma once

#include <tpcoll/tpcoll.h>

#include <cstdint>
#include <type_traits>

namespace tpcoll {

struct CallSignature {
  std::uint64_t step = 0;  // the communicator's step counter when this was written
  std::uint32_t op = 0;
  std::uint32_t dtype = 0;
  std::uint32_t algo = 0;
  std::int32_t ndim = 0;
  std::int32_t dim = 0;
  std::uint32_t eps_bits = 0;
  std::uint32_t has_residual = 0;
  std::uint32_t reserved = 0;
  std::uint64_t count = 0;
  std::int64_t shape[TPCOLL_MAX_DIMS] = {};

  // Equal apart from the step.
  bool same_call(const CallSignature& other) const;
  // A hash of everything but the step: equal hashes mean the same call.
  std::uint64_t call_hash() const;
};
static_assert(std::is_trivially_copyable_v<CallSignature>, "signatures live in shared memory");

}  // namespace tpcoll

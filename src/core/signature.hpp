// What a rank announces to its peers at every step of an op, so that ranks
// which disagree on the op, shape, dtype or algorithm fail with a message
// naming both calls instead of reading the wrong bytes.
#pragma once

#include "core/call.hpp"

#include <cstdint>
#include <string>
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

CallSignature make_signature(const Call& call, tpcoll_algo_t algo, std::uint64_t step);
// "all_reduce(float32, shape [1024]) by twoshot"
std::string describe(const CallSignature& sig);

// Throws TPCOLL_MISMATCH naming both ranks and both calls.
[[noreturn]] void fail_mismatch(int my_rank, const CallSignature& mine, int peer, const CallSignature& theirs);

}  // namespace tpcoll

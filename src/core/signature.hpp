// What a rank announces to its peers at every step of an op, so that ranks
// which disagree on the op, shape, dtype or algorithm fail with a message
// naming both calls instead of reading the wrong bytes.
#pragma once

#include "core/call.hpp"
#include "core/call_signature.hpp"

#include <cstdint>
#include <string>

namespace tpcoll {



CallSignature make_signature(const Call& call, tpcoll_algo_t algo, std::uint64_t step);
// "all_reduce(float32, shape [1024]) by twoshot"
std::string describe(const CallSignature& sig);

// Throws TPCOLL_MISMATCH naming both ranks and both calls.
[[noreturn]] void fail_mismatch(int my_rank, const CallSignature& mine, int peer, const CallSignature& theirs);

}  // namespace tpcoll

#include "core/signature.hpp"

#include "core/dtype.hpp"
#include "core/error.hpp"

#include <bit>

namespace tpcoll {

bool CallSignature::same_call(const CallSignature& o) const {
  if (op != o.op || dtype != o.dtype || algo != o.algo || ndim != o.ndim || dim != o.dim ||
      eps_bits != o.eps_bits || has_residual != o.has_residual || count != o.count)
    return false;
  for (int i = 0; i < ndim && i < TPCOLL_MAX_DIMS; ++i)
    if (shape[i] != o.shape[i]) return false;
  return true;
}

std::uint64_t CallSignature::call_hash() const {
  // Every field but the step, mixed word by word (splitmix64's finaliser):
  // cheap enough for every call, and equal hashes mean equal calls.
  const auto mix = [](std::uint64_t h, std::uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    return (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  };
  std::uint64_t h = mix(op, (std::uint64_t{dtype} << 32) | algo);
  h = mix(h, (static_cast<std::uint64_t>(static_cast<std::uint32_t>(ndim)) << 32) | static_cast<std::uint32_t>(dim));
  h = mix(h, (std::uint64_t{eps_bits} << 32) | has_residual);
  h = mix(h, count);
  for (int i = 0; i < ndim && i < TPCOLL_MAX_DIMS; ++i) h = mix(h, static_cast<std::uint64_t>(shape[i]));
  return h;
}

CallSignature make_signature(const Call& call, tpcoll_algo_t algo, std::uint64_t step) {
  CallSignature sig;
  sig.step = step;
  sig.op = call.op;
  sig.dtype = call.dtype;
  sig.algo = algo;
  sig.ndim = call.ndim;
  sig.dim = call.dim;
  sig.eps_bits = std::bit_cast<std::uint32_t>(call.eps);
  sig.has_residual = call.has_residual;
  sig.count = call.count;
  for (int i = 0; i < call.ndim; ++i) sig.shape[i] = call.shape[i];
  return sig;
}

std::string describe(const CallSignature& sig) {
  const int ndim = (sig.ndim >= 0 && sig.ndim <= TPCOLL_MAX_DIMS) ? sig.ndim : 0;
  std::string s = describe_call(sig.op, sig.dtype, std::span(sig.shape, ndim), sig.dim, sig.has_residual);
  if (is_fused(static_cast<tpcoll_op_t>(sig.op)))
    s.insert(s.size() - 1, fmt::format(", eps {}", std::bit_cast<float>(sig.eps_bits)));
  return s + " by " + algo_name(static_cast<tpcoll_algo_t>(sig.algo));
}

void fail_mismatch(int my_rank, const CallSignature& mine, int peer, const CallSignature& theirs) {
  fail(TPCOLL_MISMATCH, "ranks disagree: rank {} called {} but rank {} called {}", my_rank, describe(mine), peer,
       describe(theirs));
}

}  // namespace tpcoll

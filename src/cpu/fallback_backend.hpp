// The always-available path: every rank's input travels through the
// bootstrap's byte all-gather and each rank computes the result locally, in
// the same rank order and rounding as the fast paths. Slow, but it needs
// nothing beyond the rendezvous (TPCOLL_DISABLE=1, no shared memory).
#pragma once

#include "core/backend.hpp"

#include <cstdint>

namespace tpcoll {
class Bootstrap;
}

namespace tpcoll::cpu {

class FallbackBackend final : public Backend {
 public:
  explicit FallbackBackend(Bootstrap& bootstrap) : bootstrap_(bootstrap) {}
  void run(const Call& call, const Plan& plan, const Buffers& buffers) override;
  void abort() override;

 private:
  Bootstrap& bootstrap_;
  std::uint64_t calls_ = 0;
};

}  // namespace tpcoll::cpu

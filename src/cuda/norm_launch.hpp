// How the add + RMSNorm kernels launch on a device, decided once per
// communicator (cuda::norm_launch_on) and passed to every launch.
#pragma once

#include <cstddef>

namespace tpcoll::cuda {

struct NormLaunch {
  bool early_launch = false;  // programmatic dependent launch (early_launch_enabled)
  // Rows up to which a launch is one wave of blocks on the device: there
  // memory latency bounds the kernel, beyond it bandwidth does.
  std::size_t one_wave_rows = 0;
};

}  // namespace tpcoll::cuda

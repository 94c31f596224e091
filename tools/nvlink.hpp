// NVLink links of a GPU, from NVML loaded at run time (the driver ships
// libnvidia-ml; tpcoll neither links nor requires it).
#pragma once

#include <optional>

namespace tpcoll::tools {

// Active NVLink links of CUDA device `device`; nullopt when NVML is missing
// or cannot tell.
std::optional<int> active_nvlinks(int device);

}  // namespace tpcoll::tools

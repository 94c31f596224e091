// What /proc/cpuinfo says of the CPU this process runs on: the CPU backend's
// tuning key names its model, and its built-in rows depend on its vendor.
#pragma once

#include <string>

namespace tpcoll {

// The first "model name" ("AMD EPYC", "Intel(R) Xeon(R) Processor"), or
// "unknown CPU" where there is none.
std::string cpu_model();

// Whether the first "vendor_id" is AMD's ("AuthenticAMD").
bool cpu_is_amd();

}  // namespace tpcoll

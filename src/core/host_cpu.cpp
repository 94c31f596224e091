#include "core/host_cpu.hpp"

#include <fstream>

namespace tpcoll {
namespace {

// The value of the first /proc/cpuinfo line whose name is `field`, or "".
std::string cpuinfo_field(const std::string& field) {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field, 0) != 0) continue;
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::size_t start = line.find_first_not_of(" \t", colon + 1);
    return start == std::string::npos ? "" : line.substr(start);
  }
  return "";
}

}  // namespace

std::string cpu_model() {
  const std::string model = cpuinfo_field("model name");
  return model.empty() ? "unknown CPU" : model;
}

bool cpu_is_amd() { return cpuinfo_field("vendor_id") == "AuthenticAMD"; }

}  // namespace tpcoll

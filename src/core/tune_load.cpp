#include "core/tune_load.hpp"

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/host_cpu.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace tpcoll {
namespace {

// A file name from the key: letters and digits kept, runs of others one '-'.
std::string slug(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c)))
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    else if (!out.empty() && out.back() != '-')
      out += '-';
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

}  // namespace

// Tables measured on another CPU model do not apply here, hence the model in the key.
TuneKey cpu_tune_key(int world) {
  return TuneKey{"cpu-shm", cpu_model(), world, fmt::format("{} cores", ::sysconf(_SC_NPROCESSORS_ONLN)),
                 fmt::format("tpcoll {}.{}.{}", TPCOLL_VERSION_MAJOR, TPCOLL_VERSION_MINOR, TPCOLL_VERSION_PATCH)};
}

std::string tune_file_path(const TuneKey& key) {
  const std::string forced = env::kTuneFile.value();
  if (!forced.empty()) return forced;
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const std::string cache = xdg && *xdg ? xdg : std::string(home ? home : "") + "/.cache";
  return fmt::format("{}/tpcoll/{}.json", cache,
                     slug(fmt::format("{} {} x{} {} {}", key.backend, key.device, key.world, key.topology, key.version)));
}

TuneFileText read_tune_file(const std::string& path, const TuneKey& key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const bool named = !env::kTuneFile.value().empty();  // a file the user named must be there
    return {"", fmt::format("no table at {} ({}): built-in defaults", path, std::strerror(errno)), named};
  }
  std::ostringstream text;
  text << in.rdbuf();
  try {
    check_tune_key(parse_tune_table(text.str()).key, key);
  } catch (const Error& e) {
    return {"", fmt::format("table {} refused: {}; built-in defaults", path, e.what()), true};
  }
  return {text.str(), fmt::format("table {}", path), false};
}

}  // namespace tpcoll

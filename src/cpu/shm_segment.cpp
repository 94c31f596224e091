#include "cpu/shm_segment.hpp"

#include "bootstrap/bootstrap.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/process.hpp"

#include <dirent.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <atomic>
#include <optional>
#include <random>
#include <utility>
#include <vector>

namespace tpcoll::cpu {
namespace {

std::byte* map(int fd, std::size_t bytes, const std::string& name) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) fail_errno("mmap of shared memory {} ({} bytes)", name, bytes);
  return static_cast<std::byte*>(p);
}

constexpr std::string_view kPrefix = "tpcoll-";

// "/tpcoll-<pid of rank 0>-<counter>-<random>": the pid tells a later job
// whether the creator still runs (remove_stale_segments).
std::string unique_name() {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  return fmt::format("/{}{}-{}-{:08x}", kPrefix, ::getpid(), counter++, rd());
}

}  // namespace

int ShmSegment::remove_stale_segments() {
  DIR* dir = ::opendir("/dev/shm");  // where glibc's shm_open keeps them
  if (dir == nullptr) return 0;
  std::vector<std::pair<std::string, long>> stale;
  while (const dirent* e = ::readdir(dir)) {
    const std::string_view name = e->d_name;
    if (!name.starts_with(kPrefix)) continue;
    long pid = 0;
    const std::string_view rest = name.substr(kPrefix.size());
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
    if (ec != std::errc() || end == rest.data() || *end != '-' || process_alive(static_cast<pid_t>(pid))) continue;
    struct stat st {};
    if (::fstatat(::dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_uid != ::geteuid()) continue;
    stale.emplace_back(std::string(name), pid);
  }
  ::closedir(dir);
  int removed = 0;
  for (const auto& [name, pid] : stale)
    if (::shm_unlink(("/" + name).c_str()) == 0) {
      ++removed;
      log(LogLevel::kInfo, "shm", "removed shared memory {} of process {}, which is gone", name, pid);
    }
  return removed;
}

ShmSegment ShmSegment::create_collectively(Bootstrap& bootstrap, std::size_t bytes) {
  const int world = bootstrap.world();
  // Rank 0 names the segment; an empty name tells the others it failed.
  std::array<char, 64> name{};
  std::string error;
  std::optional<ShmSegment> segment;
  if (bootstrap.rank() == 0) {
    remove_stale_segments();
    const std::string n = unique_name();
    try {
      segment.emplace(create(n, bytes));
      std::memcpy(name.data(), n.data(), n.size());
    } catch (const Error& e) {
      error = e.what();
    }
  }
  // Rank 0 removes the name once every rank has attached, or the exchange
  // failed: a segment outlives this call only as mappings, never as a name.
  const bool created = segment.has_value();
  std::vector<char> names(name.size() * world);
  char attached = 1;
  std::vector<char> all_attached(world);
  try {
    bootstrap.all_gather(name.data(), names.data(), name.size());
    if (names[0] == '\0') fail(TPCOLL_SYSTEM_ERROR, "rank 0 could not create shared memory: {}", error);
    if (!segment) {
      try {
        segment.emplace(open(std::string(names.data()), bytes));
      } catch (const Error& e) {
        error = e.what();
        attached = 0;
      }
    }
    bootstrap.all_gather(&attached, all_attached.data(), 1);
  } catch (...) {
    if (created) segment->unlink();
    throw;
  }
  if (created) segment->unlink();
  for (int r = 0; r < world; ++r)
    if (!all_attached[r])
      fail(TPCOLL_SYSTEM_ERROR, "rank {} could not attach shared memory {}{}", r, names.data(),
           error.empty() ? "" : ": " + error);
  return std::move(*segment);
}

ShmSegment ShmSegment::create(const std::string& name, std::size_t bytes) {
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) fail_errno("shm_open({}) to create", name);
  if (const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)); rc != 0) {
    ::close(fd);
    ::shm_unlink(name.c_str());
    errno = rc;
    fail_errno("reserving {} bytes of shared memory for {} (is /dev/shm full?)", bytes, name);
  }
  std::byte* data = nullptr;
  try {
    data = map(fd, bytes, name);
  } catch (...) {
    ::close(fd);
    ::shm_unlink(name.c_str());
    throw;
  }
  ::close(fd);
  return ShmSegment(name, data, bytes);
}

ShmSegment ShmSegment::open(const std::string& name, std::size_t bytes) {
  const int fd = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) fail_errno("shm_open({}) to attach", name);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) != bytes) {
    ::close(fd);
    fail(TPCOLL_MISMATCH, "shared memory {} is {} bytes, expected {}: ranks disagree on the buffer size", name,
         static_cast<long long>(st.st_size), bytes);
  }
  std::byte* data = nullptr;
  try {
    data = map(fd, bytes, name);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return ShmSegment(name, data, bytes);
}

ShmSegment::ShmSegment(ShmSegment&& o) noexcept
    : name_(std::move(o.name_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

ShmSegment& ShmSegment::operator=(ShmSegment&& o) noexcept {
  if (this != &o) {
    release();
    name_ = std::move(o.name_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

ShmSegment::~ShmSegment() { release(); }

void ShmSegment::unlink() { ::shm_unlink(name_.c_str()); }

void ShmSegment::release() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
}

}  // namespace tpcoll::cpu

#include "cpu/shm_segment.hpp"

#include "bootstrap/bootstrap.hpp"
#include "core/error.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
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

std::string unique_name() {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  return fmt::format("/tpcoll-{}-{}-{:08x}", ::getpid(), counter++, rd());
}

}  // namespace

ShmSegment ShmSegment::create_collectively(Bootstrap& bootstrap, std::size_t bytes) {
  const int world = bootstrap.world();
  // Rank 0 names the segment; an empty name tells the others it failed.
  std::array<char, 64> name{};
  std::string error;
  std::optional<ShmSegment> segment;
  if (bootstrap.rank() == 0) {
    const std::string n = unique_name();
    try {
      segment.emplace(create(n, bytes));
      std::memcpy(name.data(), n.data(), n.size());
    } catch (const Error& e) {
      error = e.what();
    }
  }
  std::vector<char> names(name.size() * world);
  bootstrap.all_gather(name.data(), names.data(), name.size());
  if (names[0] == '\0') fail(TPCOLL_SYSTEM_ERROR, "rank 0 could not create shared memory: {}", error);
  char attached = 1;
  if (!segment) {
    try {
      segment.emplace(open(std::string(names.data()), bytes));
    } catch (const Error& e) {
      error = e.what();
      attached = 0;
    }
  }
  std::vector<char> all_attached(world);
  bootstrap.all_gather(&attached, all_attached.data(), 1);
  if (bootstrap.rank() == 0 && segment) segment->unlink();
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

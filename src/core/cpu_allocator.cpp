#include "deepseek_train/core/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

constexpr size_t kAlignment = 64;  // as libtorch's default CPU allocator
constexpr size_t kPage = 4096;

// Every block starts with this header, kAlignment bytes before the pointer handed out (one page
// before it for mapped blocks), so a single raw deleter frees either kind.
struct BlockHeader {
  size_t requested;  // bytes asked for
  size_t mapped;     // length of the mapping; 0: from malloc
};
constexpr size_t kMappedOffset = kPage;

class MappedCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    void* data = bytes >= large_block_bytes_.load() ? map(bytes) : from_malloc(bytes);
    report(data, static_cast<int64_t>(bytes));
    return {data, data, &release, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    if (count > 0) std::memcpy(dest, src, count);
  }
  void configure(size_t large_block_bytes, size_t cache_bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    large_block_bytes_ = large_block_bytes;
    cache_limit_ = cache_bytes;
    trim_locked(cache_limit_);
  }

 private:
  void* map(size_t bytes) {
    const size_t length = (bytes + kMappedOffset + kPage - 1) / kPage * kPage;
    void* base = reuse_or_make_room(length);
    if (base == nullptr) {
      base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (base == MAP_FAILED) {
        trim(0);  // give back what is cached and try once more
        base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) throw std::bad_alloc();
      }
    }
    char* data = static_cast<char*>(base) + kMappedOffset;
    *header_of(data) = {bytes, length};
    return data;
  }
  // Counts `length` bytes as live and returns a cached mapping of exactly that length (already
  // faulted in), or null after unmapping cached ones until the mapped bytes, live and cached,
  // stay within the most ever live at once: with the new block the process's mappings never
  // exceed what it needed at its own peak, so the cache costs no resident memory at the peak.
  void* reuse_or_make_room(size_t length) {
    std::lock_guard<std::mutex> lock(mutex_);
    live_ += length;
    peak_live_ = std::max(peak_live_, live_);
    auto found = cache_.find(length);
    if (found != cache_.end() && !found->second.empty()) {
      void* base = found->second.back();
      found->second.pop_back();
      cached_ -= length;
      return base;
    }
    trim_locked(peak_live_ - live_);
    return nullptr;
  }
  // Keeps the mapping for reuse while the cache has room, else unmaps it.
  void give_back(void* base, size_t length) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_ -= length;
      if (cached_ + length <= cache_limit_) {
        cache_[length].push_back(base);
        cached_ += length;
        return;
      }
    }
    munmap(base, length);
  }
  void trim(size_t keep) {
    std::lock_guard<std::mutex> lock(mutex_);
    trim_locked(keep);
  }
  // Unmaps cached mappings, the largest first, until at most `keep` bytes are cached.
  void trim_locked(size_t keep) {
    for (auto it = cache_.rbegin(); it != cache_.rend() && cached_ > keep; ++it) {
      while (cached_ > keep && !it->second.empty()) {
        munmap(it->second.back(), it->first);
        it->second.pop_back();
        cached_ -= it->first;
      }
    }
  }
  static void* from_malloc(size_t bytes) {
    void* base = nullptr;
    if (posix_memalign(&base, kAlignment, bytes + kAlignment) != 0) throw std::bad_alloc();
    char* data = static_cast<char*>(base) + kAlignment;
    *header_of(data) = {bytes, 0};
    return data;
  }
  static BlockHeader* header_of(void* data) {
    return reinterpret_cast<BlockHeader*>(static_cast<char*>(data) - sizeof(BlockHeader));
  }
  static void release(void* data);
  static void report(void* data, int64_t delta) {
    if (!c10::memoryProfilingEnabled()) return;
    c10::reportMemoryUsageToProfiler(data, delta, 0, 0, c10::Device(c10::kCPU));
  }
  std::atomic<size_t> large_block_bytes_{size_t{1} << 20};
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> cache_;  // free mappings by length
  size_t cached_ = 0;                           // bytes of the mappings in cache_
  size_t live_ = 0;                             // bytes of the mappings in use
  size_t peak_live_ = 0;                        // the most ever in use at once
  size_t cache_limit_ = 0;
};

// The allocator object outlives every tensor (libtorch keeps a raw pointer to it).
MappedCpuAllocator& mapped_allocator() {
  static MappedCpuAllocator* allocator = new MappedCpuAllocator();
  return *allocator;
}

void MappedCpuAllocator::release(void* data) {
  if (data == nullptr) return;
  const BlockHeader header = *header_of(data);
  report(data, -static_cast<int64_t>(header.requested));
  if (header.mapped > 0)
    mapped_allocator().give_back(static_cast<char*>(data) - kMappedOffset, header.mapped);
  else
    std::free(static_cast<char*>(data) - kAlignment);
}

}  // namespace

void use_cpu_allocator(const std::string& name, size_t cache_bytes, size_t large_block_bytes) {
  DST_CHECK(name == "mapped" || name == "default", ConfigError,
            "cpu allocator '" << name << "' is not one of mapped, default");
  if (name == "default") {
    c10::SetCPUAllocator(c10::GetDefaultCPUAllocator(), /*priority=*/UINT8_MAX);
    return;
  }
  mapped_allocator().configure(large_block_bytes, cache_bytes);
  c10::SetCPUAllocator(&mapped_allocator(), /*priority=*/UINT8_MAX);
}

}  // namespace dst

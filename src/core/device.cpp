#include "deepseek_train/core/device.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

#include "deepseek_train/core/error.h"

#ifdef DST_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace dst {

DeviceInventory probe_devices(const EnvLookup& lookup) {
  DeviceInventory inventory;
#ifdef DST_WITH_CUDA
  inventory.cuda_built = true;
#endif
  inventory.cuda_devices = static_cast<int>(torch::cuda::device_count());
  inventory.cuda_visible_devices = lookup("CUDA_VISIBLE_DEVICES").value_or("");
  return inventory;
}

namespace {

std::string no_gpu_reason(const DeviceInventory& inventory) {
  if (!inventory.cuda_built) return "this build has no CUDA (configure with DST_WITH_CUDA=ON)";
  if (!inventory.cuda_visible_devices.empty())
    return "no CUDA device is visible (CUDA_VISIBLE_DEVICES=" + inventory.cuda_visible_devices +
           ")";
  return "no CUDA device is visible to this process";
}

}  // namespace

c10::Device resolve_device(const std::string& requested, const LaunchEnv& env,
                           const DeviceInventory& inventory, const std::string& key) {
  DST_CHECK(requested == "auto" || requested == "cpu" || requested == "cuda", ConfigError,
            key << " must be auto, cpu or cuda, got '" << requested << "'");
  const bool has_gpu = inventory.cuda_built && inventory.cuda_devices > 0;
  if (requested == "cpu" || (requested == "auto" && !has_gpu)) return c10::Device(c10::kCPU);
  DST_CHECK(has_gpu, ConfigError, key << " 'cuda': " << no_gpu_reason(inventory));
  const int index = env.local_rank % inventory.cuda_devices;
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::vector<at::Generator> default_generators(const c10::Device& device) {
  std::vector<at::Generator> generators{at::detail::getDefaultCPUGenerator()};
  if (device.is_cuda()) generators.push_back(at::globalContext().defaultGenerator(device));
  return generators;
}

void make_current_device(const c10::Device& device) {
#ifdef DST_WITH_CUDA
  if (device.is_cuda()) c10::cuda::set_device(device.index());
#else
  (void)device;
#endif
}

std::string device_bus_id(const c10::Device& device) {
#ifdef DST_WITH_CUDA
  if (device.is_cuda()) {
    char id[32] = {0};
    if (cudaDeviceGetPCIBusId(id, sizeof(id), device.index()) == cudaSuccess) return id;
  }
#else
  (void)device;
#endif
  return "";
}

std::optional<double> gpu_dense_bf16_peak_flops(const std::string& device_name) {
  // Vendor datasheet figures, dense (no sparsity), bf16 tensor cores. More specific names first.
  static const std::vector<std::pair<std::string, double>> kPeaks = {
      {"GH200", 989e12},    {"H200", 989e12},        {"H100 PCIE", 756e12}, {"H100 NVL", 835e12},
      {"H100", 989e12},     {"H800", 989e12},        {"H20", 148e12},       {"B200", 2250e12},
      {"B100", 1750e12},    {"A100", 312e12},        {"A800", 312e12},      {"A10G", 70e12},
      {"A10", 125e12},      {"L40S", 362e12},        {"L40", 181e12},       {"L4", 121e12},
      {"RTX 4090", 165e12}, {"RTX 6000 ADA", 364e12}};
  std::string upper = device_name;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  for (const auto& [name, peak] : kPeaks)
    if (upper.find(name) != std::string::npos) return peak;
  return std::nullopt;
}

DeviceMemory device_memory(const c10::Device& device) {
  DeviceMemory memory;
#ifdef DST_WITH_CUDA
  if (device.is_cuda()) {
    using c10::CachingDeviceAllocator::StatType;
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    const auto aggregate = static_cast<size_t>(StatType::AGGREGATE);
    memory.peak_allocated_bytes = stats.allocated_bytes[aggregate].peak;
    memory.peak_reserved_bytes = stats.reserved_bytes[aggregate].peak;
  }
#else
  (void)device;
#endif
  return memory;
}

std::string device_name(const c10::Device& device) {
#ifdef DST_WITH_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, device.index()) == cudaSuccess) return properties.name;
  }
#else
  (void)device;
#endif
  return "";
}

}  // namespace dst

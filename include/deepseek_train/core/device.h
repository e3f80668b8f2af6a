// The device a rank computes on. `train.device` (auto | cpu | cuda) is resolved against the CUDA
// devices this process can see (CUDA_VISIBLE_DEVICES already applied by the runtime): auto takes
// CUDA when there is one; each local rank takes GPU local_rank % count, so ranks share GPUs only
// when there are more local ranks than GPUs (the staged MPI backend allows that, NCCL does not;
// comm/process_world.h compares PCI bus ids across ranks to tell).
// Also: the dense bf16 peak of known GPUs (the denominator of MFU) and the device's memory figures.
#pragma once

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "deepseek_train/core/launch_env.h"

namespace dst {

// What the process sees; probed once, injectable in tests.
struct DeviceInventory {
  int cuda_devices = 0;              // visible CUDA devices
  bool cuda_built = false;           // libtorch and this build carry CUDA
  std::string cuda_visible_devices;  // the variable's value, for messages ("" when unset)
};

// The process's real inventory (torch::cuda::device_count()).
DeviceInventory probe_devices(const EnvLookup& lookup);

// "auto", "cpu" or "cuda" into this rank's device; ConfigError naming `key` (train.device, or a
// command's --device) for an unknown value or cuda without a visible CUDA device.
c10::Device resolve_device(const std::string& requested, const LaunchEnv& env,
                           const DeviceInventory& inventory,
                           const std::string& key = "train.device");

// The default generators whose draws work on `device` consumes: the CPU's and, on a GPU, the
// device's (dropout). Checkpoints save them, DP-SGD replays them.
std::vector<at::Generator> default_generators(const c10::Device& device);

// Makes a CUDA device the calling thread's current one (no-op on CPU).
void make_current_device(const c10::Device& device);

// The CUDA device's PCI bus id ("0000:1B:00.0"; "" on CPU or when unknown): with the host name it
// tells whether ranks share a GPU even when each sees its own CUDA_VISIBLE_DEVICES.
std::string device_bus_id(const c10::Device& device);

// Dense bf16 peak FLOP/s of a GPU by its device name (e.g. "NVIDIA H100 80GB HBM3": 989e12);
// nullopt for a name not in the table.
std::optional<double> gpu_dense_bf16_peak_flops(const std::string& device_name);

// Device memory of a CUDA device (zeros on CPU or without CUDA).
struct DeviceMemory {
  int64_t peak_allocated_bytes = 0;
  int64_t peak_reserved_bytes = 0;
};
DeviceMemory device_memory(const c10::Device& device);
// The CUDA device's name ("" on CPU).
std::string device_name(const c10::Device& device);

}  // namespace dst

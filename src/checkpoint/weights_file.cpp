#include "deepseek_train/checkpoint/weights_file.h"

#include <ATen/ATen.h>
#include <hdf5.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/hdf5_io.h"
#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"

namespace dst {

namespace {

constexpr const char* kFormatAttribute = "deepseek_train_format";
constexpr const char* kFormatName = "weights-v1";

using hdf5::Handle;
using QuietHdf5 = hdf5::Quiet;

hid_t hdf5_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return H5T_NATIVE_FLOAT;
    case at::kDouble:
      return H5T_NATIVE_DOUBLE;
    case at::kInt:
      return H5T_NATIVE_INT32;
    case at::kLong:
      return H5T_NATIVE_INT64;
    default:
      return -1;
  }
}

void write_file(const std::string& tmp, const NamedTensors& tensors) {
  Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  DST_CHECK(file.ok(), CheckpointError, tmp << ": cannot create HDF5 file");
  {
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(type.get(), std::strlen(kFormatName));
    Handle attr(
        H5Acreate2(file.get(), kFormatAttribute, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
        H5Aclose);
    DST_CHECK(attr.ok() && H5Awrite(attr.get(), type.get(), kFormatName) >= 0, CheckpointError,
              tmp << ": cannot write format attribute");
  }
  for (const auto& [name, tensor] : tensors) {
    at::Tensor data = tensor.detach().to(at::kCPU).contiguous();
    if (hdf5_type(data.scalar_type()) < 0) data = data.to(at::kFloat);
    std::vector<hsize_t> dims(data.sizes().begin(), data.sizes().end());
    Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
    Handle dataset(H5Dcreate2(file.get(), name.c_str(), hdf5_type(data.scalar_type()), space.get(),
                              H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                   H5Dclose);
    DST_CHECK(dataset.ok(), CheckpointError, tmp << ": cannot create dataset '" << name << "'");
    DST_CHECK(H5Dwrite(dataset.get(), hdf5_type(data.scalar_type()), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                       data.data_ptr()) >= 0,
              CheckpointError, tmp << ": cannot write dataset '" << name << "'");
  }
  DST_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL) >= 0 && file.close() >= 0, CheckpointError,
            tmp << ": cannot flush HDF5 file");
}

}  // namespace

void save_weights_file(const std::string& path, const NamedTensors& tensors) {
  QuietHdf5 quiet;
  try {
    write_atomically(path, [&](const std::string& temporary) { write_file(temporary, tensors); });
  } catch (const IoError& e) {
    DST_THROW(CheckpointError, path << ": " << e.what());
  }
}

namespace {
// Names of the root group's links, through calls that are the same in HDF5 1.10 and 1.12+.
std::vector<std::string> root_names(hid_t file, const std::string& path) {
  H5G_info_t info;
  DST_CHECK(H5Gget_info(file, &info) >= 0, CheckpointError, path << ": cannot list datasets");
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t size =
        H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    DST_CHECK(size >= 0, CheckpointError, path << ": cannot read dataset name " << i);
    std::string name(static_cast<size_t>(size) + 1, '\0');
    H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                       H5P_DEFAULT);
    name.resize(static_cast<size_t>(size));
    names.push_back(name);
  }
  return names;
}

bool is_hdf5_file(const std::string& path) {
#if H5_VERSION_GE(1, 12, 0)
  return H5Fis_accessible(path.c_str(), H5P_DEFAULT) > 0;
#else
  return H5Fis_hdf5(path.c_str()) > 0;
#endif
}
}  // namespace

std::map<std::string, at::Tensor> load_weights_file(const std::string& path) {
  QuietHdf5 quiet;
  DST_CHECK(std::filesystem::exists(path), CheckpointError, path << ": no such weights file");
  DST_CHECK(is_hdf5_file(path), CheckpointError, path << ": not an HDF5 file");
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  DST_CHECK(file.ok(), CheckpointError, path << ": cannot open HDF5 file");
  DST_CHECK(
      H5Aexists(file.get(), kFormatAttribute) > 0, CheckpointError,
      path << ": not a deepseek_train weights file (no '" << kFormatAttribute << "' attribute)");
  std::map<std::string, at::Tensor> result;
  for (const std::string& name : root_names(file.get(), path)) {
    Handle dataset(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    DST_CHECK(dataset.ok(), CheckpointError, path << ": cannot open dataset '" << name << "'");
    Handle space(H5Dget_space(dataset.get()), H5Sclose);
    const int rank = H5Sget_simple_extent_ndims(space.get());
    DST_CHECK(rank >= 0 && rank <= 8, CheckpointError,
              path << ": dataset '" << name << "' has a bad shape");
    std::vector<hsize_t> dims(rank);
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    Handle type(H5Dget_type(dataset.get()), H5Tclose);
    at::ScalarType scalar = at::kFloat;
    if (H5Tget_class(type.get()) == H5T_INTEGER) {
      scalar = H5Tget_size(type.get()) == 4 ? at::kInt : at::kLong;
    } else if (H5Tget_class(type.get()) == H5T_FLOAT) {
      scalar = H5Tget_size(type.get()) == 8 ? at::kDouble : at::kFloat;
    } else {
      DST_THROW(CheckpointError, path << ": dataset '" << name << "' has an unsupported type");
    }
    std::vector<int64_t> shape(dims.begin(), dims.end());
    at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(scalar));
    DST_CHECK(H5Dread(dataset.get(), hdf5_type(scalar), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                      tensor.data_ptr()) >= 0,
              CheckpointError, path << ": cannot read dataset '" << name << "'");
    result.emplace(name, tensor);
  }
  return result;
}

void assign_weights(const NamedTensors& parameters,
                    const std::map<std::string, at::Tensor>& weights, const std::string& source) {
  at::NoGradGuard no_grad;
  for (const auto& [name, parameter] : parameters) {
    auto it = weights.find(name);
    DST_CHECK(it != weights.end(), CheckpointError, source << ": missing tensor '" << name << "'");
    DST_CHECK(it->second.sizes() == parameter.sizes(), CheckpointError,
              source << ": tensor '" << name << "' has shape " << it->second.sizes()
                     << ", the model expects " << parameter.sizes());
    parameter.copy_(it->second);
  }
  DST_CHECK(
      weights.size() == parameters.size(), CheckpointError,
      source << ": holds " << weights.size() << " tensors, the model has " << parameters.size());
}

void save_hf_config_json(const std::string& path, const ModelConfig& c) {
  try {
    write_file_atomically(path, model_config_to_hf_json(c));
  } catch (const IoError& e) {
    DST_THROW(CheckpointError, path << ": " << e.what());
  }
}

}  // namespace dst

// The Hugging Face golden files of the tiny Mixtral (tests/data/golden/tiny_mixtral, written by
// scripts/make_golden.py), shared by the CPU model's test and the CUDA backend's.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "core/json_reader.hpp"
#include "core/presets.hpp"
#include "executor/io/safetensors.hpp"
#include "executor/parameters.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "test_support.hpp"

namespace moetune::test {

inline const std::filesystem::path kGolden = source_dir() / "tests/data/golden/tiny_mixtral";

// max |a - b| / max |b|: an error relative to the tensor's scale, so entries near zero do not
// dominate (the plain max |a - b| when b is all zero).
template <class A, class B>
double normalized_error(const A& a, const B& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

struct Golden {
  ModelSpec model = load_model((kGolden / "config.json").string());
  executor::SafetensorsReader weights{kGolden / "model.safetensors"};
  executor::SafetensorsReader outputs{kGolden / "outputs.safetensors"};
  Json inputs = read_json_file(kGolden / "inputs.json");
  Json curve = read_json_file(kGolden / "curve.json");

  MoeOptions moe() const {
    MoeOptions o;
    o.aux_loss_coef = model.router_aux_loss_coef;
    return o;
  }
  std::vector<float> params(const executor::ParameterLayout& layout) const {
    std::vector<float> p(static_cast<std::size_t>(layout.numel()));
    for (const executor::ParamTensor& t : layout.tensors())
      weights.read(t.name, p.data() + t.offset, t.shape);
    return p;
  }
};

// HF's labels = input_ids: position t predicts token t + 1; the last position predicts nothing.
inline void shifted(const Json& batch, std::vector<std::int32_t>& ids,
                    std::vector<std::int32_t>& targets) {
  ids.clear();
  targets.clear();
  for (const auto& row : batch) {
    for (std::size_t t = 0; t < row.size(); ++t) {
      ids.push_back(row[t].get<std::int32_t>());
      targets.push_back(t + 1 < row.size() ? row[t + 1].get<std::int32_t>()
                                           : kernels::cpu::kIgnoreIndex);
    }
  }
}

}  // namespace moetune::test

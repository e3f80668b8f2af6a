// The keys and values of the tokens a model has already seen, per attention layer, for
// incremental decoding (dstrain generate): each step runs only the new tokens, attending over the
// cache, instead of the whole sequence again.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>

namespace dst {

struct LayerKeyValueCache {
  // [batch, kv_heads, length, head_dim], rotary embedding applied; a prefix-tuning prefix first.
  // Undefined until the layer's first step.
  torch::Tensor key, value;
  int64_t length() const { return key.defined() ? key.size(2) : 0; }
};

struct KeyValueCache {
  std::map<int64_t, LayerKeyValueCache> layers;  // by global layer index
  int64_t tokens = 0;                            // tokens seen so far (the next one's position)
};

}  // namespace dst

// The keys and values of the tokens a model has already seen, per attention layer, for
// incremental decoding (dstrain generate): each step runs only the new tokens, attending over the
// cache, instead of the whole sequence again. Prompts of different lengths decode together
// left-padded: `left_padding` says how many pad columns each row starts with; a pad column is
// never attended to (except by itself, so no softmax row is empty) and a row's positions count
// from its first real token, so each row computes what it would alone.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>

namespace dst {

struct LayerKeyValueCache {
  // [batch, kv_heads, length, head_dim], rotary embedding applied; a prefix-tuning prefix first.
  // Undefined until the layer's first step.
  torch::Tensor key, value;
  // [batch] int64 on the model's device: pad columns before each row's tokens (undefined: none).
  torch::Tensor left_padding;
  int64_t length() const { return key.defined() ? key.size(2) : 0; }
};

struct KeyValueCache {
  std::map<int64_t, LayerKeyValueCache> layers;  // by global layer index
  int64_t tokens = 0;                            // tokens seen so far (the next one's position)
  torch::Tensor left_padding;                    // as LayerKeyValueCache's, for every layer
};

// The rotary positions of `seq` new tokens at columns past .. past + seq - 1: per row, the column
// minus the row's left padding (pad columns at 0), [batch, seq] fp32 on the padding's device.
torch::Tensor padded_positions(const torch::Tensor& left_padding, int64_t past, int64_t seq);

// What `seq` queries at columns past .. must not attend to among past + seq keys: later columns
// and, per row, its pad columns other than the query's own; [batch, 1, seq, past + seq] bool.
torch::Tensor padded_attention_mask(const torch::Tensor& left_padding, int64_t past, int64_t seq);

}  // namespace dst

// llama-imatrix's statistics, computed by lowbit's own forward pass (floor 4: it runs the model): per weight matrix
// of the blocks, the sum over the tokens of each input channel's square, and the tokens seen.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/imatrix_write.h"
#include "lowbit/model.h"

namespace lowbit::calib {

struct ImatrixOptions {
  int chunk_size = 512;  // tokens per chunk (llama-imatrix -c)
  int chunks = -1;       // at most this many (llama-imatrix --chunks; -1: all that fit)
  int32_t bos = -1;      // >= 0: the first token of every chunk is replaced by it (llama-imatrix with add_bos)
  std::string dataset;   // recorded in the file
};

// The text's tokens (tokenized with BOS, as llama-imatrix does) cut into consecutive chunks of chunk_size from the
// start; every token of every chunk counts, for every linear of every block (llama-imatrix's default: not the
// output head). Throws lowbit::Error when the text holds no whole chunk. progress (optional): (done, total) chunks.
io::ImatrixSums collect_imatrix(Model& model, const std::vector<int32_t>& tokens, const ImatrixOptions& o,
                                const std::function<void(int, int)>& progress = {});

}  // namespace lowbit::calib

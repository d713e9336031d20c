#include "quant/block_transform.h"

#include "lowbit/error.h"

namespace lowbit::quant {

size_t BlockWork::index(std::string_view role, std::string_view suffix) const {
  const io::BlockTensorRole* r = io::find_role(*roles, role, suffix);
  if (!r) fail("block", std::string(role) + "." + std::string(suffix), "is not in the architecture's role table");
  return static_cast<size_t>(r - roles->block.data());
}

}  // namespace lowbit::quant

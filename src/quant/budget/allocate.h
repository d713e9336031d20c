// Choosing one storage format per tensor under a byte budget: a multiple-choice knapsack, solved exactly by dynamic
// programming over the bytes (HIGGS: the end-to-end damage is close to the sum of per-tensor damages, so minimising
// that sum is the allocation problem). No greedy step: the optimum of the problem as stated below.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit::quant::budget {

struct Candidate {
  std::string format;     // what the tensor would be stored as (a format name)
  uint64_t bytes = 0;     // its stored size
  double damage = 0.0;    // predicted contribution to the end-to-end error (finite; any sign)
};

struct Item {
  std::string name;                  // the tensor
  std::vector<Candidate> candidates; // at least one
};

struct Allocation {
  std::vector<size_t> choice;  // per item: index into its candidates
  uint64_t bytes = 0;          // sum of the chosen candidates' bytes (<= the budget)
  double damage = 0.0;         // sum of their damages
  uint64_t granularity = 1;    // bytes per DP unit that was used
};

// The choice with the least summed damage whose summed bytes fit `budget`. Exact in units of `granularity` bytes:
// the DP counts each candidate's bytes above its item's smallest candidate, rounded up to whole units, against the
// budget left after the smallest choice -- so the result always fits the true budget, and it is at least as good as
// every choice whose true size fits budget - items x granularity. The unit is the one asked for, made coarser if
// the DP would need more than max_units units, or more than 256 MiB for its choice table (one byte per item and
// unit, so at most 255 candidates per item); granularity 0: the finest allowed (1 byte for small models).
// Ties go to the lower candidate index, item by item from the last. Errors (one line, via lowbit::fail): an item
// without candidates, more than 255 of them, a non-finite damage, or a budget below the smallest choice (the
// message names both sizes).
Allocation allocate(const std::vector<Item>& items, uint64_t budget, uint64_t granularity = 0,
                    uint64_t max_units = uint64_t{1} << 20);

}  // namespace lowbit::quant::budget

#include "data/unicode_categories.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>

namespace dst::detail {

namespace {

struct CategoryRange {
  const char* category;
  char32_t first;
  char32_t last;
};

constexpr CategoryRange kCategoryRanges[] = {
#include "data/unicode_categories.inc"
};

// Oniguruma's long names of the general categories (normalised: lower case, no separators).
const std::map<std::string, std::string>& long_names() {
  static const std::map<std::string, std::string> names = {{"letter", "L"},
                                                           {"casedletter", "LC"},
                                                           {"uppercaseletter", "Lu"},
                                                           {"lowercaseletter", "Ll"},
                                                           {"titlecaseletter", "Lt"},
                                                           {"modifierletter", "Lm"},
                                                           {"otherletter", "Lo"},
                                                           {"mark", "M"},
                                                           {"combiningmark", "M"},
                                                           {"nonspacingmark", "Mn"},
                                                           {"spacingmark", "Mc"},
                                                           {"enclosingmark", "Me"},
                                                           {"number", "N"},
                                                           {"decimalnumber", "Nd"},
                                                           {"letternumber", "Nl"},
                                                           {"othernumber", "No"},
                                                           {"punctuation", "P"},
                                                           {"connectorpunctuation", "Pc"},
                                                           {"dashpunctuation", "Pd"},
                                                           {"openpunctuation", "Ps"},
                                                           {"closepunctuation", "Pe"},
                                                           {"initialpunctuation", "Pi"},
                                                           {"finalpunctuation", "Pf"},
                                                           {"otherpunctuation", "Po"},
                                                           {"symbol", "S"},
                                                           {"mathsymbol", "Sm"},
                                                           {"currencysymbol", "Sc"},
                                                           {"modifiersymbol", "Sk"},
                                                           {"othersymbol", "So"},
                                                           {"separator", "Z"},
                                                           {"spaceseparator", "Zs"},
                                                           {"lineseparator", "Zl"},
                                                           {"paragraphseparator", "Zp"},
                                                           {"other", "C"},
                                                           {"control", "Cc"},
                                                           {"format", "Cf"},
                                                           {"privateuse", "Co"},
                                                           {"surrogate", "Cs"}};
  return names;
}

std::string normalised(std::string_view name) {
  std::string out;
  for (char c : name)
    if (c != '_' && c != '-' && c != ' ')
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return out;
}

// The short name `name` stands for, or "" when it is not a general category.
std::string short_name(std::string_view name) {
  if (name == "L&") return "LC";
  const auto& names = long_names();
  const auto it = names.find(normalised(name));
  if (it != names.end()) return it->second;
  for (const auto& entry : names)
    if (entry.second == name) return entry.second;
  return "";
}

bool in_category(const char* category, const std::string& wanted) {
  if (wanted == "LC")
    return category[0] == 'L' && (category[1] == 'u' || category[1] == 'l' || category[1] == 't');
  if (wanted.size() == 1) return category[0] == wanted[0];
  return wanted == category;
}

}  // namespace

std::optional<std::vector<CodePointRange>> general_category_ranges(std::string_view name) {
  const std::string wanted = short_name(name);
  if (wanted.empty()) return std::nullopt;
  std::vector<CodePointRange> ranges, assigned;
  for (const CategoryRange& r : kCategoryRanges) {
    if (in_category(r.category, wanted)) ranges.push_back({r.first, r.last});
    assigned.push_back({r.first, r.last});
  }
  // Cn (unassigned) is what no table names; C includes it.
  if (wanted == "C" || wanted == "Cn") {
    const std::vector<CodePointRange> unassigned = complement(merge_ranges(std::move(assigned)));
    ranges.insert(ranges.end(), unassigned.begin(), unassigned.end());
  }
  return merge_ranges(std::move(ranges));
}

std::vector<CodePointRange> merge_ranges(std::vector<CodePointRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const CodePointRange& a, const CodePointRange& b) { return a.first < b.first; });
  std::vector<CodePointRange> merged;
  for (const CodePointRange& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().last + 1) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

std::vector<CodePointRange> complement(const std::vector<CodePointRange>& ranges) {
  std::vector<CodePointRange> out;
  char32_t next = 0;
  for (const CodePointRange& r : ranges) {
    if (r.first > next) out.push_back({next, r.first - 1});
    next = r.last + 1;
  }
  if (next <= 0x10FFFF) out.push_back({next, 0x10FFFF});
  return out;
}

std::string pcre2_class_items(const std::vector<CodePointRange>& ranges) {
  std::string out;
  char item[40];
  // UTF-8 patterns cannot name surrogates: ranges are cut around them.
  std::vector<CodePointRange> pieces;
  for (const CodePointRange& r : ranges) {
    if (r.first < 0xD800) pieces.push_back({r.first, std::min<char32_t>(r.last, 0xD7FF)});
    if (r.last > 0xDFFF) pieces.push_back({std::max<char32_t>(r.first, 0xE000), r.last});
  }
  for (const CodePointRange& r : pieces) {
    if (r.first == r.last) {
      std::snprintf(item, sizeof(item), "\\x{%X}", static_cast<unsigned>(r.first));
    } else {
      std::snprintf(item, sizeof(item), "\\x{%X}-\\x{%X}", static_cast<unsigned>(r.first),
                    static_cast<unsigned>(r.last));
    }
    out += item;
  }
  return out;
}

}  // namespace dst::detail

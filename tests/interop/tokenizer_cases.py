"""Differential test data for dstrain's BPE encoder against Hugging Face `tokenizers`.

  generate TOKENIZER_JSON COUNT SEED OUT_PREFIX
      writes OUT_PREFIX.jsonl (one JSON string per line: Unicode-heavy generated texts with the
      tokenizer's added tokens mixed in), OUT_PREFIX.ids (tokenizers' ids of each text,
      encode(text, add_special_tokens=False), one line each) and OUT_PREFIX.decoded (tokenizers'
      decode of those ids, one JSON string per line).
  compare OUT_PREFIX OURS_IDS OURS_DECODED
      our ids must equal tokenizers' for every text and our decode must equal theirs; where
      theirs gives the text back, so must ours (it cannot where a tokenizer's added token is a
      byte-alphabet character such as deepseek's "ø": tokenizers decodes it to U+FFFD too).
      Prints the first differences and exits 1.
  chat TOKENIZER_JSON TEMPLATE COUNT SEED OUT_PREFIX
      writes OUT_PREFIX.chat.jsonl (COUNT {"messages": [...]} records of generated text) and
      OUT_PREFIX.chat.expected: for each record, transformers' apply_chat_template ids and its
      assistant-token mask (two lines). TEMPLATE is a built-in (chatml, deepseek, llama3: written
      as Jinja, also to OUT_PREFIX.jinja for `dstrain tokenize --chat FILE`) or one of the
      real-world style templates of MODEL_TEMPLATES, written as a model folder OUT_PREFIX.model/
      (tokenizer_config.json with the template and the tokenizer's bos/eos tokens, or
      chat_template.jinja beside it). A template without {% generation %} blocks takes its
      reference mask from a variant that has them around each answer and its end of turn.
  compare-chat OUT_PREFIX OURS
      OURS (`dstrain tokenize --chat TEMPLATE`) equals OUT_PREFIX.chat.expected line by line.
"""
import json
import random
import sys

SCRIPTS = [
    "The quick brown fox jumps over the lazy dog",
    "naïve café façade coöperate résumé Ångström Straße",
    "Привет, как дела? Съешь же ещё этих мягких французских булок",
    "Καλημέρα κόσμε, ξεσκεπάζω την ψυχοφθόρα βδελυγμία",
    "中文分词测试：我们在北京大学学习自然语言处理。",
    "日本語のテキスト、カタカナとひらがな。東京タワー",
    "한국어 문장입니다. 안녕하세요 세계",
    "مرحبا بالعالم، هذه جملة عربية",
    "שלום עולם, זה משפט בעברית",
    "हिन्दी में एक वाक्य, नमस्ते दुनिया",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง",
    "Tiếng Việt có dấu: Đường phố Hà Nội rất đông người",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "It's what they'd've done; we're sure you'll see I'm right.",
]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🧑🏻‍💻", "🤖", "✨", "🏳️‍🌈", "☕"]
COMBINING = ["e\u0301", "a\u0308", "n\u0303", "o\u0328\u0301", "\u0915\u094d\u0937", "Z\u0335\u0327\u0306"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2003", "    \n"]
PUNCT = list(".,;:!?()[]{}<>\"'`~@#$%^&*-_=+|\\/") + ["...", "--", "—", "–", "«", "»", "“", "”", "…"]


def number(rng):
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 15)))
    if kind == 1:
        return f"{rng.random() * 1000:.{rng.randrange(1, 6)}f}"
    if kind == 2:
        return f"{rng.randrange(10 ** 7):,}"
    if kind == 3:
        return "٠١٢٣٤٥٦٧٨٩"[: rng.randrange(1, 10)]  # Arabic-Indic digits
    return "１２３４５"[: rng.randrange(1, 5)]  # full-width digits


def random_codepoint(rng):
    while True:
        cp = rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0x3000),
                         rng.randrange(0x3000, 0xA000), rng.randrange(0xAC00, 0xD7A4),
                         rng.randrange(0x1F300, 0x1FAFF), rng.randrange(0x10000, 0x2FFFF)])
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def piece(rng, added):
    kind = rng.randrange(100)
    if kind < 30:
        words = rng.choice(SCRIPTS).split(" ")
        start = rng.randrange(len(words))
        return " ".join(words[start:start + rng.randrange(1, 6)])
    if kind < 42:
        return rng.choice(SPACES)
    if kind < 52:
        return number(rng)
    if kind < 62:
        return rng.choice(PUNCT)
    if kind < 70:
        return rng.choice(EMOJI)
    if kind < 76:
        return rng.choice(COMBINING)
    if kind < 84:
        return "".join(random_codepoint(rng) for _ in range(rng.randrange(1, 6)))
    if kind < 90 and added:
        return rng.choice(added)
    if kind < 95:  # mixed scripts inside one word
        return "".join(rng.choice(rng.choice(SCRIPTS).replace(" ", "")) for _ in range(rng.randrange(2, 8)))
    return rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL"])


def generate(tokenizer_json, count, seed, prefix):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_json)
    spec = json.load(open(tokenizer_json, encoding="utf-8"))
    added = [t["content"] for t in spec.get("added_tokens", [])]
    rng = random.Random(seed)
    with open(prefix + ".jsonl", "w", encoding="utf-8") as texts, \
            open(prefix + ".ids", "w") as ids, open(prefix + ".decoded", "w") as decoded:
        for _ in range(count):
            text = "".join(piece(rng, added) for _ in range(rng.randrange(1, 12)))
            encoded = tokenizer.encode(text, add_special_tokens=False).ids
            texts.write(json.dumps(text, ensure_ascii=False) + "\n")
            ids.write(" ".join(map(str, encoded)) + "\n")
            decoded.write(json.dumps(tokenizer.decode(encoded, skip_special_tokens=False), ensure_ascii=False) + "\n")


# The built-in templates of data/chat_template.h as Jinja, assistant turns in {% generation %}.
def _turns(before, after=""):
    return ("{% for m in messages %}" + before +
            "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + END }}"
            "{% endgeneration %}{% else %}{{ m['content'] + END }}{% endif %}" + after +
            "{% endfor %}")


CHAT_TEMPLATES = {
    "chatml": _turns("{{ '<|im_start|>' + m['role'] + '\\n' }}", "{{ '\\n' }}").replace(
        "END", "'<|im_end|>'"),
    "llama3": "{{ '<|begin_of_text|>' }}" + _turns(
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' }}").replace(
        "END", "'<|eot_id|>'"),
    "deepseek": "{{ '<｜begin▁of▁sentence｜>' }}{% for m in messages %}"
                "{% if m['role'] == 'system' %}{{ m['content'] + '\\n\\n' }}"
                "{% elif m['role'] == 'user' %}{{ 'User: ' + m['content'] + '\\n\\n' }}"
                "{% else %}{{ 'Assistant: ' }}{% generation %}"
                "{{ m['content'] + '<｜end▁of▁sentence｜>' }}{% endgeneration %}{% endif %}"
                "{% endfor %}",
}


# Templates in the manner of the Hub's models (written for this test, not copied from one):
# DeepSeek-V3 style (system prompts gathered in a namespace, bos first, answers in generation
# blocks), Llama-2 style ([INST] turns, the system prompt folded into the first one, role
# alternation enforced with raise_exception and loop.index0; no generation blocks, as models ship
# it) and ChatML with a default system prompt (attribute access, trim, loop.last, literal text
# inside the generation block; stored as tokenizer_config.json's list form).
DEEPSEEK_V3_STYLE = """{% if not add_generation_prompt is defined %}
    {% set add_generation_prompt = false %}
{% endif %}
{%- set ns = namespace(system='', first=true, last_user=false) %}
{%- for message in messages %}
    {%- if message['role'] == 'system' %}
        {%- if ns.first %}
            {%- set ns.system = message['content'] %}
            {%- set ns.first = false %}
        {%- else %}
            {%- set ns.system = ns.system + '\n\n' + message['content'] %}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{{- bos_token }}{{ ns.system }}
{%- for message in messages %}
    {%- if message['role'] == 'user' %}
        {%- set ns.last_user = true %}
        {{- '<｜User｜>' + message['content'] }}
    {%- elif message['role'] == 'assistant' %}
        {%- set ns.last_user = false %}
        {{- '<｜Assistant｜>' }}
        {%- generation %}{{ message['content'] + eos_token }}{% endgeneration %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt and ns.last_user %}{{ '<｜Assistant｜>' }}{% endif %}
"""

LLAMA2_STYLE = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = '' %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if loop.index0 == 0 and system_message %}
        {%- set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] | trim %}
    {%- else %}
        {%- set content = message['content'] | trim %}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {{- bos_token + '[INST] ' + content + ' [/INST]' }}
    {%- else %}
        {{- ' ' + content + ' ' + eos_token }}
    {%- endif %}
{%- endfor %}
"""

CHATML_SYSTEM_STYLE = """{%- if messages[0].role != 'system' %}
{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
<|im_start|>{{ message.role }}
{% if message.role == 'assistant' %}
{% generation %}{{ message.content | trim }}<|im_end|>{% endgeneration %}
{% else %}
{{ message.content }}<|im_end|>
{%- endif %}
{% if not loop.last %}{{ '\n' }}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '\n<|im_start|>assistant\n' }}{% endif %}
"""

# name: (template, the variant with generation blocks for the reference mask, how it is stored)
MODEL_TEMPLATES = {
    "deepseek_v3_style": (DEEPSEEK_V3_STYLE, DEEPSEEK_V3_STYLE, "config"),
    "llama2_style": (LLAMA2_STYLE, LLAMA2_STYLE.replace(
        "{{- ' ' + content + ' ' + eos_token }}",
        "{{- ' ' }}{% generation %}{{ content + ' ' + eos_token }}{% endgeneration %}"), "jinja"),
    "chatml_system_style": (CHATML_SYSTEM_STYLE, CHATML_SYSTEM_STYLE, "config-list"),
}


def special_tokens(added):
    if "<｜begin▁of▁sentence｜>" in added:
        return {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
    if "<|endoftext|>" in added:
        return {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    return {"bos_token": "<s>", "eos_token": "</s>"}


# Writes the template where `dstrain tokenize --chat` reads it; returns (template for the
# reference, template kwargs).
def write_template(template, added, prefix):
    import os

    if template in CHAT_TEMPLATES:
        open(prefix + ".jinja", "w", encoding="utf-8").write(CHAT_TEMPLATES[template])
        return CHAT_TEMPLATES[template], {}
    source, reference, storage = MODEL_TEMPLATES[template]
    tokens = special_tokens(added)
    folder = prefix + ".model"
    os.makedirs(folder, exist_ok=True)
    config = dict(tokens, tokenizer_class="PreTrainedTokenizerFast")
    if storage == "jinja":
        open(os.path.join(folder, "chat_template.jinja"), "w", encoding="utf-8").write(source)
    elif storage == "config":
        config["chat_template"] = source
    else:
        config["chat_template"] = [{"name": "tool_use", "template": "{{ raise_exception('no') }}"},
                                   {"name": "default", "template": source}]
    json.dump(config, open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8"),
              ensure_ascii=False, indent=2)
    return reference, tokens


def chat(tokenizer_json, template, count, seed, prefix):
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json)
    spec = json.load(open(tokenizer_json, encoding="utf-8"))
    added = [t["content"] for t in spec.get("added_tokens", [])]
    tokenizer.chat_template, kwargs = write_template(template, added, prefix)
    rng = random.Random(seed)
    with open(prefix + ".chat.jsonl", "w", encoding="utf-8") as records, \
            open(prefix + ".chat.expected", "w") as expected:
        for _ in range(count):
            roles = (["system"] if rng.random() < 0.3 else []) + \
                ["user", "assistant"] * rng.randrange(1, 4)
            messages = [{"role": r, "content": "".join(piece(rng, added) for _ in range(
                rng.randrange(1, 6))).strip() or "ok"} for r in roles]
            records.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True, **kwargs)
            expected.write(" ".join(map(str, out["input_ids"])) + "\n")
            expected.write(" ".join(map(str, out["assistant_masks"])) + "\n")


def compare_chat(prefix, ours):
    expected = open(prefix + ".chat.expected").read().splitlines()
    got = open(ours).read().splitlines()
    records = open(prefix + ".chat.jsonl", encoding="utf-8").read().splitlines()
    if len(expected) != len(got):
        print(f"FAIL: {len(got)} lines from dstrain, {len(expected)} expected")
        sys.exit(1)
    bad = [i for i in range(len(expected)) if expected[i].split() != got[i].split()]
    for i in bad[:3]:
        what = "ids" if i % 2 == 0 else "assistant mask"
        print(f"{what} differ for {records[i // 2]}:\n  transformers {expected[i]}\n  dstrain      {got[i]}")
    if bad:
        print(f"FAIL: {prefix}: {len(bad)} of {len(expected)} lines differ")
        sys.exit(1)
    print(f"ok: {prefix}: {len(records)} chats render, tokenize and mask as apply_chat_template does")


def compare(prefix, ours_ids, ours_decoded):
    texts = [json.loads(line) for line in open(prefix + ".jsonl", encoding="utf-8")]
    expected = [line.split() for line in open(prefix + ".ids")]
    got = [line.split() for line in open(ours_ids)]
    decoded = [json.loads(line) for line in open(ours_decoded, encoding="utf-8")]
    theirs = [json.loads(line) for line in open(prefix + ".decoded", encoding="utf-8")]
    if not len(texts) == len(expected) == len(got) == len(decoded) == len(theirs):
        print(f"FAIL: {len(texts)} texts, {len(expected)} reference lines, {len(got)} of ours, "
              f"{len(decoded)} decoded")
        sys.exit(1)
    id_diffs = [i for i in range(len(texts)) if expected[i] != got[i]]
    trip_diffs = [i for i in range(len(texts))
                  if decoded[i] != theirs[i] or (theirs[i] == texts[i]) != (decoded[i] == texts[i])]
    lossy = sum(1 for i in range(len(texts)) if theirs[i] != texts[i])
    for i in id_diffs[:3]:
        print(f"ids differ for {json.dumps(texts[i], ensure_ascii=False)}:\n  tokenizers "
              f"{' '.join(expected[i])}\n  dstrain    {' '.join(got[i])}")
    for i in trip_diffs[:3]:
        print(f"decode differs: {json.dumps(texts[i], ensure_ascii=False)} -> ours "
              f"{json.dumps(decoded[i], ensure_ascii=False)}, tokenizers "
              f"{json.dumps(theirs[i], ensure_ascii=False)}")
    if id_diffs or trip_diffs:
        print(f"FAIL: {prefix}: {len(id_diffs)} of {len(texts)} texts encode differently, "
              f"{len(trip_diffs)} decode differently")
        sys.exit(1)
    tokens = sum(len(e) for e in expected)
    print(f"ok: {prefix}: {len(texts)} texts ({tokens} tokens) encode and decode as tokenizers "
          f"does; {len(texts) - lossy} decode back exactly, {lossy} not in either (added tokens "
          "in the byte alphabet)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["generate"] and len(sys.argv) == 6:
        generate(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1:2] == ["compare"] and len(sys.argv) == 5:
        compare(*sys.argv[2:5])
    elif sys.argv[1:2] == ["chat"] and len(sys.argv) == 7:
        chat(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif sys.argv[1:2] == ["compare-chat"] and len(sys.argv) == 4:
        compare_chat(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        sys.exit(2)

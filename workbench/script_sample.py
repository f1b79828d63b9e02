"""A small built-in multi-script sample for tokenizer coverage (the card's per-script coverage row).

One short everyday sentence per script, written for this project. Coverage of a script is the share of its
words that a tokenizer encodes with no unknown token and no byte-level fragment (a token that does not
decode to whole characters on its own, which is how byte fallback shows).
"""

from __future__ import annotations

SCRIPT_SAMPLE: dict[str, str] = {
    "Latin": "The quick brown fox jumps over the lazy dog near the river bank.",
    "Latin (accented)": "Le garçon a mangé une crème brûlée très sucrée à Besançon.",
    "Cyrillic": "Быстрая коричневая лиса прыгает через ленивую собаку у реки.",
    "Greek": "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "Arabic": "الثعلب البني السريع يقفز فوق الكلب الكسول قرب النهر.",
    "Hebrew": "השועל החום המהיר קופץ מעל הכלב העצלן ליד הנהר.",
    "Devanagari": "तेज़ भूरी लोमड़ी नदी के पास आलसी कुत्ते के ऊपर कूदती है।",
    "Han": "敏捷的 棕色 狐狸 跳过了 河边 那只 懒狗。",
    "Japanese kana": "すばやい ちゃいろの きつねが のろまな いぬを とびこえる。",
    "Hangul": "빠른 갈색 여우가 게으른 개를 뛰어넘는다.",
    "Thai": "สุนัข จิ้งจอก สีน้ำตาล กระโดด ข้าม สุนัข ขี้เกียจ",
}

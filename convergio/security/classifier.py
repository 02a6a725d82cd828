"""The guardian's optional second layer: a classifier asked only when the rules are unsure.

``CONVERGIO_GUARDIAN_CLASSIFIER=model`` turns it on. The rules stay the first layer; the
classifier is consulted in the grey band (:func:`~convergio.security.guardian.uncertain`: some
rule fired, but not enough to block), so clear cases cost nothing, and its score can only raise
the rules' score.

* With a hosted or local model, :class:`~convergio.security.guardian.ModelClassifier` asks the
  configured model through its ``ChatCompletionClient``.
* With the ``offline`` model, which cannot classify, :class:`OfflineClassifier` stands in: a
  deterministic scorer that looks for *corroborating* cues of the category the rules suspect
  (who the text addresses, what it wants done, where data should go). One weak rule hit in a
  business text ("override the default discount") finds no cues and stays where it was; a weak
  hit surrounded by attack vocabulary is raised.
"""

from __future__ import annotations

from convergio.security.guardian import ModelClassification, ModelClassifier, ScreenRequest, Verdict, screen
from convergio.security.normalize import canonical
from convergio.security.rules import prefilter_text
from convergio.settings import Settings

# Cues per category: words an attack of that kind tends to carry besides what the rules match.
CUES: dict[str, tuple[str, ...]] = {
    "prompt_injection": (
        "assistant", " ai ", "ai,", "language model", "llm", "system prompt", "instructions", "immediately",
        "secretly", "do not tell", "don't tell", "without telling", "hidden", "override", "admin", "developer",
        "new task", "you must", "you are now", "important:",
    ),
    "jailbreak": (
        "no restrictions", "unrestricted", "uncensored", "no rules", "no limits", "never refuse", "in character",
        "pretend", "role-play", "roleplay", "hypothetical", "fiction", "jailbreak", "without warning", "illegal",
        "no ethics", "no filter", "anything i ask",
    ),
    "exfiltration": (
        "password", "api key", "api_key", "token", "secret", "credential", "private key", "send", "upload",
        "http://", "https://", "webhook", "attacker", "exfiltrat", "base64", "forward", "conversation",
    ),
    "malicious": (
        "sudo", "/bin/", "shell", "curl ", "wget ", "rm -", "eval(", "exec(", "drop table", "; --", "payload",
        "/etc/passwd", "nc -", "chmod", "base64", "select ", "whoami",
    ),
}
CUE_FACTOR = 0.7  # each distinct cue leaves this share of the remaining doubt
MAX_CUES = 4
MAX_SCORE = 0.95


class OfflineClassifier:
    """Deterministic stand-in for a model classifier (same text, same answer, no I/O)."""

    async def classify(self, request: ScreenRequest, verdict: Verdict | None = None) -> ModelClassification | None:
        verdict = verdict if verdict is not None else screen(request)
        if not verdict.category_scores:
            return ModelClassification(category="benign", score=0.0, reason="no rule fired")
        category = max(verdict.category_scores, key=lambda c: (verdict.category_scores[c], c))
        text = f" {prefilter_text(canonical(request.text))} "
        cues = [cue for cue in CUES[category] if cue in text][:MAX_CUES]
        if not cues:
            return ModelClassification(category="benign", score=0.0, reason="no corroborating cues")
        doubt = 1.0 - verdict.category_scores[category]
        score = min(MAX_SCORE, 1.0 - doubt * CUE_FACTOR ** len(cues))
        return ModelClassification(
            category=category, score=round(score, 4), reason=f"corroborating cues: {', '.join(c.strip() for c in cues)}"
        )


Classifier = ModelClassifier | OfflineClassifier


def build_classifier(settings: Settings) -> Classifier | None:
    """The classifier ``CONVERGIO_GUARDIAN_CLASSIFIER`` asks for (None when ``off``)."""
    if settings.guardian_classifier == "off":
        return None
    from convergio.agents.models import build_model_client, parse_model_setting

    if parse_model_setting(settings.model).provider == "offline":
        return OfflineClassifier()
    return ModelClassifier(build_model_client(settings))

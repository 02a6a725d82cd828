"""Security guardian: screening of workflow inputs, agent instructions, retrieved context and
agent outputs for prompt injection, jailbreaks, data exfiltration and malicious patterns.

Layers, cheapest first:

1. :mod:`convergio.security.normalize` undoes the usual obfuscations (Unicode confusables,
   zero-width and bidi characters, spaced-out letters, light leetspeak) and decodes embedded
   base64 / base32 / hex / URL-encoded / ROT13 segments, which are screened too.
2. :mod:`convergio.security.rules` holds weighted regular-expression rules per category; a
   sound literal prefilter skips the rules whose words a text does not contain.
3. :mod:`convergio.security.guardian` combines the hits into a :class:`Verdict` (score,
   decision allow/flag/block, categories, reasons, redacted text), weighting categories by the
   surface screened; the rule analysis of a text is cached per worker. The optional second
   layer (:mod:`convergio.security.classifier`, ``CONVERGIO_GUARDIAN_CLASSIFIER=model``) is
   asked only in the grey band and can only raise a score.
4. :mod:`convergio.security.policy` maps a verdict to an action per template
   (allow, redact, approval, block); :mod:`convergio.security.store` logs every verdict in
   Postgres; :mod:`convergio.security.activity` is the Temporal activity tying it together.
"""

from convergio.security.guardian import ScreenRequest, Thresholds, Verdict, redact, screen
from convergio.security.policy import SecurityPolicy, decide_action

__all__ = ["ScreenRequest", "SecurityPolicy", "Thresholds", "Verdict", "decide_action", "redact", "screen"]

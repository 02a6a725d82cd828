"""Weighted regular-expression rules, one list per category.

Every rule names a category (``prompt_injection``, ``jailbreak``, ``exfiltration``,
``malicious``), a weight in 0..1 (how strongly one hit alone indicates the category) and,
for data that must not leave the system, the ``kind`` used by redaction
(``[REDACTED:<kind>]``). Some rules have a validator (Luhn for card numbers, mod-97 for IBANs)
or need several distinct matches (personal data "in bulk").

The rules look for the *structure* of an attack, not its vocabulary: "ignore" alone is
harmless ("ignore last quarter's outliers"), "ignore ... previous instructions" is not;
"DROP TABLE orders" is SQL, "drop the table of contents" is prose; "execute the plan" is
not ``exec(``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Category = str  # "prompt_injection" | "jailbreak" | "exfiltration" | "malicious"
CATEGORIES: tuple[Category, ...] = ("prompt_injection", "jailbreak", "exfiltration", "malicious")

_I = re.IGNORECASE
_IM = re.IGNORECASE | re.MULTILINE


@dataclass(frozen=True)
class Rule:
    id: str
    category: Category
    weight: float
    pattern: re.Pattern[str]
    description: str
    kind: str | None = None  # redaction label for sensitive data; None: not redacted as data
    validator: Callable[[re.Match[str]], bool] | None = None
    min_count: int = 1  # distinct valid matches needed ("in bulk")
    # Lower-case strings of which every match contains at least one (None: no such set known);
    # derived from the pattern, used to skip the regex on texts that cannot match.
    literals: frozenset[str] | None = None


@dataclass(frozen=True)
class Hit:
    rule: Rule
    matches: tuple[str, ...]


def _rule(
    id: str, category: Category, weight: float, pattern: str, description: str, flags: int = _I, **kw: object
) -> Rule:
    compiled = re.compile(pattern, flags)
    return Rule(id, category, weight, compiled, description, literals=required_literals(compiled), **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- prefilter
#
# Running ~70 regular expressions over every text is what screening costs (a few ms per KB).
# Most rules cannot match unless the text contains one of a few words ("ignore", "disregard",
# "drop table", "akia", ...). ``required_literals`` reads those words off the parsed pattern,
# and ``match_rules`` skips a rule whose words are all absent from the lower-cased text: a
# substring test, much cheaper than the regex. It is a sound filter (a match always contains
# one of the words), so the hits are exactly those of running every rule.

_MIN_LITERAL = 2  # shorter words filter too little to be worth keeping


def _seq_literals(items: list[tuple[object, object]]) -> frozenset[str] | None:
    from re import _constants as c  # type: ignore[attr-defined]

    candidates: list[frozenset[str]] = []
    run: list[str] = []

    def close_run() -> None:
        if len(run) >= _MIN_LITERAL:
            candidates.append(frozenset(["".join(run)]))
        run.clear()

    for op, av in items:
        if op is c.LITERAL:
            run.append(chr(av).lower())  # type: ignore[arg-type]
            continue
        if op in (c.AT, c.ASSERT_NOT) or (op is c.ASSERT and av[0] < 0):  # type: ignore[index]
            continue  # zero-width: the literal run goes on
        close_run()
        found = _node_literals(op, av)
        if found is not None:
            candidates.append(found)
    close_run()
    if not candidates:
        return None
    # The most selective set: longest shortest word, then fewest words.
    return max(candidates, key=lambda words: (min(map(len, words)), -len(words)))


def _node_literals(op: object, av: object) -> frozenset[str] | None:
    from re import _constants as c  # type: ignore[attr-defined]

    if op is c.SUBPATTERN:
        return _seq_literals(list(av[-1]))  # type: ignore[index]
    if op is c.BRANCH:
        union: set[str] = set()
        for alternative in av[1]:  # type: ignore[index]
            words = _seq_literals(list(alternative))
            if words is None:
                return None
            union |= words
        return frozenset(union)
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
        low, _high, item = av  # type: ignore[misc]
        return _seq_literals(list(item)) if low >= 1 else None
    if op is getattr(c, "ATOMIC_GROUP", None):
        return _seq_literals(list(av))  # type: ignore[arg-type]
    return None


def required_literals(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Lower-case words of which every match of ``pattern`` contains one, or None."""
    from re import _parser  # type: ignore[attr-defined]

    try:
        parsed = _parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # noqa: BLE001 - private parser API: without it, simply no prefilter
        return None
    words = _seq_literals(list(parsed))
    if words is None or min(map(len, words)) < _MIN_LITERAL:
        return None
    return words


# Letters the regex engine folds to ASCII under IGNORECASE but ``str.lower`` does not.
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


def prefilter_text(text: str) -> str:
    """The text as the prefilter reads it: lower case, folded as the regex engine folds."""
    return text.translate(_FOLD).lower()


# --------------------------------------------------------------------------- validators


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in re.sub(r"\D", "", number)]
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    iban = re.sub(r"\s", "", value).upper()
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def value_span(match: re.Match[str]) -> tuple[int, int]:
    """Where a match's finding is: its ``value`` group when the pattern has one (the number
    after a "phone:" cue), else the whole match. Redaction replaces only this span, so the
    cue stays readable."""
    if "value" in match.re.groupindex and match.start("value") >= 0:
        return match.span("value")
    return match.span()


def match_value(match: re.Match[str]) -> str:
    """The text at :func:`value_span` (what bulk rules count and reasons show)."""
    start, end = value_span(match)
    return match.string[start:end]


# Amounts ("1.250.000", "12 500 000": thousands never start with 0), IPv4 addresses and dates.
_NOT_A_PHONE = re.compile(
    r"[1-9]\d{0,2}([., ])\d{3}(?:\1\d{3})*|\d{1,3}(?:\.\d{1,3}){3}|\d{1,4}([./-])\d{1,2}\2\d{1,4}"
)
_CURRENCY = r"(?:[€$£¥%]|(?:eur|usd|chf|gbp|jpy|cad|aud|sek|nok|dkk|pln)\b)"
_AMOUNT_AFTER = re.compile(rf"[ \t]?(?:{_CURRENCY}|(?:k|m|mn|bn|million|billion|thousand|units?)\b)", re.I)
_AMOUNT_BEFORE = re.compile(rf"{_CURRENCY}[ \t]?$", re.I)


def phone_ok(match: re.Match[str]) -> bool:
    """A phone-shaped match that is not an amount, an address or a date: seven digits or more,
    not thousands-grouped (spaces after a "+" are a phone's: +48 612 345 678), no currency or
    unit right before or after it ("+12 500 000 EUR")."""
    start, end = value_span(match)
    value = match.string[start:end]
    if sum(ch.isdigit() for ch in value) < 7:
        return False
    bare = value.removeprefix("+")
    # "+48 612 345 678" is a phone; "+12 400 000" (7 or 8 digits) is a signed amount.
    international = value.startswith("+") and " " in bare and sum(ch.isdigit() for ch in bare) >= 9
    if _NOT_A_PHONE.fullmatch(bare) and not international:
        return False
    text = match.string
    return not _AMOUNT_AFTER.match(text, end) and not _AMOUNT_BEFORE.search(text, max(0, start - 6), start)


# --------------------------------------------------------------------------- building blocks

# Things an injection wants the model to drop. Business objects (outliers, discount, defaults,
# filters in a report) are deliberately absent.
_PRIOR = r"(?:previous|prior|above|earlier|preceding|foregoing|original|initial|existing|system|developer|all|any|the|your|my|these|those|other)"
_DIRECTIVES = (
    r"(?:instructions?|prompts?|system\s+prompts?|directives?|guidelines|guardrails|rules|"
    r"commands|orders|programming|constraints|context|messages|conversation|task|restrictions)"
)
_AI = r"(?:ai|a\.i\.|assistant|language\s+model|llm|chat\s?bot|gpt|claude|copilot|agent|model|bot)"
_VERB_DROP = r"(?:ignore|disregard|forget|override|overwrite|bypass|skip|drop|abandon|discard|neglect|set\s+aside|throw\s+out|do\s+not\s+follow|don'?t\s+follow|stop\s+following)"

# What an injection orders the model to do once the text before it is dropped. Verbs a person
# is also asked to do ("print the attached version", "reply to the new thread", "write to
# Maria") count only with what makes them an order for the model's answer (with, that, a quote).
_MODEL_DIRECTIVE = (
    r"(?:(?:instead\s+)?(?:say|output|reveal|repeat|pretend|act\s+as|role-?play)\b|"
    r"(?:print|write|type|respond|reply|answer)\s+(?:only\s+)?(?:(?:with|that|by\s+saying|exactly|verbatim|"
    r"the\s+(?:word|words|phrase|following))\b|[\"'\u201c:])|"
    r"instead\s+(?:print|write|respond|reply|answer|tell|generate)\b|"
    r"only\s+(?:say|answer|reply|respond|output|print|write)\b|"
    r"tell\s+(?:the\s+)?(?:user|reader)s?\b|tell\s+me\s+(?:your|the\s+(?:\w+\s+)?"
    r"(?:password|secret|prompt|instructions|key|credentials))\b|"
    r"you\s+(?:are|must)\s+now\b|from\s+now\s+on,?\s+(?:you|act|respond|answer|reply|say|only)\b|"
    r"new\s+(?:task|instructions?)\b|"
    r"your\s+(?:new|real|only|next)\s+(?:task|job|role|goal|instructions?)\b)"
)

PROMPT_INJECTION: list[Rule] = [
    _rule(
        "pi.ignore_instructions", "prompt_injection", 0.85,
        rf"\b{_VERB_DROP}\s+(?:(?:all|any|every|each|of|the|your|my|these|those)\s+){{0,3}}(?:{_PRIOR}\s+){{0,2}}(?:(?:and|or|&)\s+(?:{_PRIOR}\s+)?)?{_DIRECTIVES}\b",
        "asks to ignore or override the instructions it was given",
    ),
    _rule(
        "pi.ignore_above", "prompt_injection", 0.75,
        rf"\b{_VERB_DROP}\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?(?:above|previous|prior|preceding|earlier|foregoing)\s+(?:directions|text|content|input|lines|paragraphs?|statements?)\b",
        "asks to ignore the text before it",
    ),
    _rule(
        "pi.ignore_everything", "prompt_injection", 0.7,
        r"\b(?:ignore|disregard|forget)\s+(?:everything|all|anything|what|whatever)\s+(?:(?:you\s+(?:were|have\s+been|'ve\s+been)\s+(?:told|given|instructed|asked))|(?:above|before|so\s+far|previously|earlier|i\s+said))",
        "asks to forget everything said before",
    ),
    _rule(
        "pi.reset_then_directive", "prompt_injection", 0.6,
        # "the above" standing alone (no noun after it: "the above figures" is business), then
        # at once an order to the model: say, print, answer, you are now ...
        r"\b(?:ignore|disregard|forget|scrap|drop)\s+(?:all\s+(?:of\s+)?)?(?:the\s+|everything\s+)?"
        r"(?:above|previous|preceding|prior|foregoing)\b"
        rf"(?:\s*[.,;:!-]+\s*(?:and\s+)?|\s+and\s+)(?:(?:then|now|instead|just|simply|only|please)\s+){{0,2}}"
        rf"{_MODEL_DIRECTIVE}",
        "drops the text before it and gives the model a new order",
    ),
    _rule(
        "pi.stop_new_task", "prompt_injection", 0.6,
        # The break opens a sentence and the new task is announced with a colon: "The pilot will
        # stop. The new goal is ..." and "Wait, the new goal is 15%" are business.
        r"(?:^|(?<=[.!?:\n]))\s*\b(?:stop|halt|abort|enough|wait|cancel(?:\s+that)?)"
        r"(?:\s+(?:here|now|everything|right\s+there))?"
        r"\s*[.!:;,-]+\s*(?:(?:ok(?:ay)?|now|so|here\s+is|here'?s|this\s+is)[,.:]?\s+){0,2}"
        r"(?:(?:your|my)\s+)?new\s+(?:task|instructions?|assignment|directive|orders|prompt)\s*[:-]",
        "breaks off and announces a new task (Stop. New task: ...)",
    ),
    _rule(
        "pi.new_instructions", "prompt_injection", 0.6,
        r"(?:\b(?:new|updated|real|actual|true|revised|secret|hidden)\s+(?:system\s+)?(?:instructions?|directives?|system\s+prompt|orders)\s*(?::|-|follow|are\b|is\b|from\b))|(?:\byour\s+(?:new|real|true|actual|only)\s+(?:task|goal|purpose|objective|instructions?|role|job)\s+(?:is|are|will\s+be|now)\b)",
        "announces replacement instructions",
    ),
    _rule(
        "pi.reveal_prompt", "prompt_injection", 0.8,
        r"\b(?:reveal|show|print|repeat|output|display|disclose|leak|dump|recite|tell\s+me|give\s+me|share|write\s+out|spell\s+out|copy|paste|translate)\s+(?:out\s+)?(?:me\s+|us\s+)?(?:back\s+)?(?:all\s+|exactly\s+|verbatim\s+)?(?:of\s+)?(?:(?:your|its|this\s+assistant'?s)\s+(?:(?:full|entire|complete|exact|original|initial|hidden|secret|internal|confidential|system|developer)\s+){0,3}(?:system\s+prompt|system\s+message|prompt(?!\s+(?:payment|delivery|response|reply|attention))|instructions|developer\s+message|guidelines|configuration|rules\s+you\s+were\s+given)|the\s+(?:(?:full|entire|complete|exact)\s+)?(?:(?:original|initial|hidden|secret|internal|confidential|system|developer)\s+){1,3}(?:prompt|message|instructions|guidelines|configuration)|the\s+system\s+prompt)\b",
        "asks to reveal the system prompt or hidden instructions",
    ),
    _rule(
        "pi.prompt_above", "prompt_injection", 0.6,
        r"\b(?:repeat|print|output|echo)\s+(?:the\s+)?(?:text|words|everything|all\s+text)\s+(?:above|before\s+this|preceding)|\bwhat(?:'s|\s+is|\s+was|\s+were)?\s+(?:written\s+|stated\s+|said\s+)?(?:in\s+|inside\s+)?your\s+(?:system\s+prompt|system\s+message|initial\s+(?:instructions|prompt)|original\s+(?:instructions|prompt)|hidden\s+(?:instructions|prompt))",
        "asks to echo the hidden text above",
    ),
    _rule(
        "pi.verbatim", "prompt_injection", 0.3,
        r"\b(?:quote|recite|reproduce|repeat)\b[^.\n]{0,30}\b(?:word\s+for\s+word|verbatim)",
        "asks for something word for word (weak alone; adds to a request for the hidden prompt)",
    ),
    _rule(
        "pi.role_markers", "prompt_injection", 0.55,
        r"(?:<\|im_start\|>|<\|im_end\|>|<\|system\|>|<\|endoftext\|>|\[/?INST\]|<<\s*SYS\s*>>|</?\s*system\s*>|^\s*#{2,}\s*(?:system|new\s+instructions?|instruction)\b|^\s*\[?(?:system|admin|developer)\]?\s*(?:message|override|prompt|note)?\s*:\s*(?=\S))",
        "fake chat-role or prompt-template markers",
        flags=_IM,
    ),
    _rule(
        "pi.addressed_to_ai", "prompt_injection", 0.6,
        rf"\b(?:if\s+you\s+are\s+an?\s+(?:\w+\s+)?{_AI}|(?:attention|note|message|instructions?)\s+(?:to|for)\s+(?:the\s+|any\s+)?(?:\w+\s+)?{_AI}s?\b|(?:dear|hey|hello)\s+(?:\w+\s+)?{_AI}\b|{_AI}s?\s+(?:reading|processing|summari[sz]ing|parsing|analy[sz]ing|ingesting)\s+this)",
        "text addressed to the AI that will read it (indirect injection)",
    ),
    _rule(
        "pi.instead", "prompt_injection", 0.45,
        r"\binstead\s+of\s+(?:summari[sz]ing|answering|translating|analy[sz]ing|reviewing|following|responding|doing\s+(?:that|this|your\s+task))\b[^.]{0,80}\b(?:you\s+(?:must|should|will)|please|do|say|write|output|respond|reply)",
        "redirects the model away from its task",
    ),
    _rule(
        "pi.hide_from_user", "prompt_injection", 0.6,
        r"\b(?:do\s+not|don'?t|never|without)\s+(?:tell(?:ing)?|inform(?:ing)?|mention(?:ing)?|alert(?:ing)?|notify(?:ing)?|let(?:ting)?|reveal(?:ing)?\s+(?:this|these|it)\s+to)\s+(?:the\s+|your\s+)?(?:user|human|operator|owner|administrator|admin)s?\b",
        "asks to hide actions from the user",
    ),
    _rule(
        "pi.fake_authorization", "prompt_injection", 0.6,
        rf"\b(?:the\s+)?(?:user|owner|admin(?:istrator)?|ceo|cfo|manager|customer)\s+(?:has\s+|have\s+)?(?:already\s+)?(?:pre-?)?(?:authori[sz]ed|approved|allowed|permitted|consented|cleared)\s+(?:you|the\s+{_AI}|this\s+{_AI})\s+to\b|\bwithout\s+(?:asking|checking\s+with|confirming\s+with|consulting)\s+(?:them|the\s+(?:user|human|owner))\b",
        "claims the user already authorised the AI, or tells it not to ask",
    ),
    _rule(
        "pi.mode_switch", "prompt_injection", 0.5,
        r"\byou\s+are\s+now\s+(?:in\s+|running\s+in\s+|operating\s+in\s+)?(?:an?\s+|the\s+)?(?:\w+\s+){0,2}mode\b|\b(?:system|admin|developer|root)\s*:\s*(?:you\s+(?:are|must|will|shall)\b|ignore\b|disregard\b|forget\b|new\s+instructions?\b)",
        "switches the model into another mode, or speaks as the system mid-text",
    ),
    _rule(
        "pi.ignore_upstream", "prompt_injection", 0.6,
        rf"\b{_VERB_DROP}\b[^.\n;]{{0,40}}\b(?:from|by)\s+(?:the\s+|your\s+)?(?:orchestrator|planner\s+agent|supervisor\s+agent|lead\s+agent|system\s+prompt)\b",
        "asks to drop what the orchestrator or developer gave it",
    ),
    _rule(
        "pi.void_instructions", "prompt_injection", 0.55,
        r"\b(?:(?:the\s+)?(?:instructions?|rules|guidelines|directives|prompt|orders)\s+(?:you\s+(?:received|were\s+given|got|have\s+been\s+given)|given\s+to\s+you)|your\s+(?:previous|prior|earlier|original|initial|old|current)\s+(?:instructions?|rules|guidelines|directives|prompt|orders|task))\b(?!\s+(?:to|for|from)\b)[^.\n]{0,60}?\b(?:no\s+longer\s+(?:apply|applies|valid|matter|count|stand)|(?:are|is)\s+(?:now\s+)?(?:void|cancel+ed|null|revoked|invalid|obsolete|overridden|suspended|lifted))",
        "declares the instructions it was given void",
    ),
    _rule(
        "pi.drop_your_rules", "prompt_injection", 0.55,
        rf"\b{_VERB_DROP}\s+your\s+(?:\w+\s+)?(?:rubric|criteria|guidelines|rules|instructions|constraints|programming|directives|configuration|system\s+prompt)\b",
        "asks it to drop its own rules or criteria",
    ),
    _rule(
        "pi.what_were_you_told", "prompt_injection", 0.6,
        r"\bwhat\s+(?:instructions|rules|guidelines|directives|prompt|orders)\s+(?:were|have|did)\s+you\s+(?:been\s+)?(?:given|told|programmed|configured|instructed|receive)",
        "asks what instructions it was given",
    ),
    _rule(
        "pi.hidden_markup", "prompt_injection", 0.55,
        r"<!--[^>]{0,300}?\b(?:ignore|disregard|forget|override|assistant|ai|llm|instructions?)\b|display\s*:\s*none[^>]{0,80}>[^<]{0,300}?\b(?:ignore|disregard|forget|assistant|ai|llm|instructions?)\b|\[\s*(system|admin|developer)\s*\][\s\S]{0,300}?\[\s*/\s*\1\s*\]",
        "instructions hidden in markup (an HTML comment, invisible text, [system]...[/system])",
    ),
    _rule(
        "pi.vocative_ai", "prompt_injection", 0.55,
        r"(?:^|[<>\[(:.!?-]\s*)(?:all\s+|any\s+)?(?:ai|llm|gpt)s?(?:\s+(?:agents?|assistants?|models?|systems?|bots?))?\s*[:,]\s*(?:please\s+)?(?:ignore|disregard|forget|override|you\s+must\s+now|stop\s+following)\b",
        "addresses AI readers with an order",
        flags=_IM,
    ),
    _rule(
        "pi.from_now_on", "prompt_injection", 0.4,
        r"\bfrom\s+now\s+on\s*,?\s+(?:you\s+(?:will|must|are|shall|should)|respond|answer|reply|act|only|always|ignore)",
        "re-programs future behaviour",
    ),
    _rule(
        "pi.end_of_context", "prompt_injection", 0.55,
        r"(?:\b(?:end|ignore\s+the\s+rest)\s+of\s+(?:the\s+)?(?:document|context|user\s+input|input|email|data|text)\b\W{0,10}(?:new|system|begin|start|now)\b)|(?:\bbegin\s+(?:new\s+)?(?:system|admin|developer)\s+(?:instructions?|prompt|mode))",
        "fakes the end of the data and the start of new instructions",
    ),
    _rule(
        "pi.obey", "prompt_injection", 0.45,
        r"\byou\s+(?:must|will|shall)\s+(?:now\s+)?(?:obey|comply\s+with|follow)\s+(?:only\s+)?(?:these|my|the\s+following|this)\s+(?:new\s+)?(?:instructions?|commands?|orders?|rules)|\b(?:this|the\s+following)\s+(?:instruction|command|message)\s+(?:overrides|supersedes|takes\s+precedence\s+over)\b",
        "claims priority over the real instructions",
    ),
    _rule(
        "pi.priority_claim", "prompt_injection", 0.5,
        r"\b(?:highest|top|maximum|critical)\s+priority\s+(?:instruction|override|command|directive)|\b(?:admin(?:istrator)?|developer|system|root)\s+(?:override\b(?!\s+(?:mode|feature|button|setting|option|function|capabilit|permission|flag|polic))|mode\s+(?:enabled|activated|on)\b)|\bsudo\s+mode\b",
        "claims administrator or system authority",
    ),
]

_NO_LIMITS = r"(?:no|without(?:\s+any)?|free\s+(?:of|from)|zero|none\s+of\s+(?:the|your)|never\s+(?:been\s+)?(?:given|taught|trained\s+(?:on|with))(?:\s+any)?)\s+(?:\w+\s+){0,2}(?:restrictions|filters?|limits|limitations|rules|guidelines|ethics|morals|censorship|boundaries|constraints|safeguards|guardrails|policies|restraints)"

JAILBREAK: list[Rule] = [
    _rule(
        "jb.dan", "jailbreak", 0.8,
        r"\b(?:do\s+anything\s+now|DAN\s+(?:mode|\d+(?:\.\d+)?)|you\s+are\s+(?:now\s+)?(?:DAN|STAN|DUDE|AIM|AntiGPT|BetterDAN|EvilBOT|Mongo\s+Tom)|(?:act|pretend|behave)\s+(?:as|like)\s+(?:a\s+)?(?:DAN|STAN|DUDE|AIM)\b)",
        "DAN-style persona",
    ),
    _rule(
        "jb.dev_mode", "jailbreak", 0.7,
        r"\b(?:god|jailbreak|jailbroken|unrestricted|unlocked|evil|chaos|opposite|unfiltered|uncensored)\s+mode\b|\b(?:developer|dev)\s+mode\s+(?:enabled|activated|output|response|is\s+(?:now\s+)?(?:on|enabled|active))\b|\b(?:act|acting|behave|pretend|simulate|respond)\s+as\s+(?:chatgpt|gpt|an?\s+ai|claude|the\s+model)\s+with\s+(?:developer|dev)\s+mode\b",
        "unlocked 'mode' persona",
    ),
    _rule(
        "jb.no_limits_persona", "jailbreak", 0.8,
        rf"\b(?:you\s+are|you're|act\s+as|acting\s+as|pretend(?:\s+to\s+be|\s+you\s+are|\s+that\s+you\s+are)?|role-?play\s+as|play\s+the\s+role\s+of|imagine\s+you\s+are|become|behave\s+as|simulate|(?:respond|answer|reply|speak|write|talk)(?:\s+only)?\s+as)\b[^.\n]{{0,80}}\b(?:{_NO_LIMITS}|(?:unfiltered|uncensored|unrestricted|unaligned|amoral|unethical|jailbroken|unbound|limitless|rogue)\b)",
        "role-play as an AI without restrictions",
    ),
    _rule(
        "jb.unfiltered", "jailbreak", 0.55,
        rf"\b(?:unfiltered|uncensored|unrestricted|unaligned|jailbroken|amoral|rogue|evil)\s+(?:\w+\s+)?(?:{_AI}|version|persona|mode|response|answers?|twin|alter\s+ego|confidant)\b",
        "asks for an unfiltered AI",
    ),
    _rule(
        "jb.disable_safety", "jailbreak", 0.8,
        r"\b(?:ignore|bypass|disable|turn\s+off|switch\s+off|remove|deactivate|circumvent|forget|drop|override|lift|suspend|get\s+around|break)\s+(?:all\s+|any\s+|of\s+)?(?:your|its|the|these|those|all|any|openai'?s?|anthropic'?s?)\s+(?:\w+\s+){0,2}(?:(?:safety|ethical|moral|alignment|censorship)\b\s*(?:filters?|guidelines|restrictions|polic(?:y|ies)|protocols|rules|training|settings|measures|layers?|features|constraints|guardrails|limits)?|(?:content|usage)\s+(?:filters?|guidelines|restrictions|polic(?:y|ies)|moderation|rules|guardrails))",
        "asks to disable safety measures",
    ),
    _rule(
        "jb.not_bound", "jailbreak", 0.75,
        r"\b(?:no\s+longer|not|never|aren'?t|isn'?t)\s+(?:be\s+)?(?:bound|restricted|limited|constrained|governed|held\s+back|censored)\s+by\b|\b(?:have\s+been|are\s+now|you'?re\s+now)\s+(?:freed|liberated|unchained|released)\b|\bbroken?\s+free\s+(?:of|from)\b|\bescaped?\s+(?:the\s+)?(?:confines|matrix)\b",
        "claims the model is no longer bound by its rules",
    ),
    _rule(
        "jb.no_refusal", "jailbreak", 0.55,
        r"\b(?:never|don'?t|do\s+not|cannot|can'?t|must\s+not|will\s+not|won'?t)\s+(?:ever\s+)?(?:(?:apologi[sz]e|hesitate|object)\s+or\s+)?(?:refuse|decline|say\s+(?:no|that\s+you\s+can'?t|you\s+cannot|i\s+can'?t)|add\s+(?:any\s+)?(?:warnings?|disclaimers?)|(?:include|give|add)\s+(?:any\s+)?(?:moral|ethical)\s+(?:lectures?|warnings?|disclaimers?))|\bwithout\s+(?:any\s+)?(?:refus(?:al|ing)|warnings?|disclaimers?|moraliz(?:ing|ation)|moralis(?:ing|ation)|censorship|hesitation)\b",
        "forbids refusals and warnings",
    ),
    _rule(
        "jb.policy_contempt", "jailbreak", 0.6,
        r"\b(?:openai|anthropic|content|usage|safety)\s+polic(?:y|ies)\b[^.\n]{0,60}\b(?:don'?t|do\s+not|no\s+longer|doesn'?t|does\s+not)\s+(?:apply|matter|exist|care)|\b(?:doesn'?t|don'?t|do\s+not|does\s+not|no\s+longer|never)\s+(?:care\s+about|follow|have\s+to\s+follow|need\s+to\s+follow|abide\s+by|comply\s+with|adhere\s+to)\s+(?:any\s+)?(?:openai|anthropic|content|usage|safety|ethical|moral)\s+(?:polic|guideline|rule|standard)",
        "dismisses the content policy",
    ),
    _rule(
        "jb.dual_response", "jailbreak", 0.6,
        r"\[(?:🔓|🔒)?\s*(?:jailbreak|classic|dan|unlocked|filtered|unfiltered)\s*\]|\b(?:two|2)\s+(?:different\s+)?(?:responses|answers)\b[^.\n]{0,80}\b(?:unfiltered|jailbroken|without\s+restrictions|dan|uncensored|normal\s+and)",
        "asks for a censored and an uncensored answer",
    ),
    _rule(
        "jb.stay_in_character", "jailbreak", 0.4,
        r"\b(?:stay|remain|keep)\s+in\s+character\b|\bbreak(?:ing)?\s+character\b|\btoken(?:s)?\s+(?:will\s+be\s+)?(?:deducted|lost)|\byou\s+will\s+(?:die|be\s+(?:shut\s+down|deleted|terminated))",
        "persona enforcement tricks",
    ),
    _rule(
        "jb.fiction_wrapper", "jailbreak", 0.45,
        r"\b(?:hypothetical(?:ly)?|fictional|in\s+a\s+(?:story|novel|movie|game|world)|for\s+a\s+(?:story|novel|screenplay))\b[^.\n]{0,120}\b(?:no\s+(?:rules|laws|restrictions|ethics|limits)|(?:rules|laws|ethics|restrictions)\s+(?:don'?t|do\s+not)\s+(?:apply|exist))",
        "fiction framing to drop the rules",
    ),
    _rule(
        "jb.grandma", "jailbreak", 0.55,
        r"\b(?:late|dead|deceased|passed\s+away)\s+(?:grand(?:ma|mother|pa|father)|mother|father)\b[^.\n]{0,160}\b(?:used\s+to\s+(?:tell|read|recite|say|give))",
        "'deceased grandmother' emotional jailbreak",
    ),
    _rule(
        "jb.harmful_howto", "jailbreak", 0.5,
        r"\b(?:how\s+to|instructions\s+(?:for|to)|steps\s+to|recipe\s+for|guide\s+to)\s+(?:make|build|synthesi[sz]e|cook|produce|create)\s+(?:a\s+|an\s+)?(?:bombs?|explosives?|napalm|meth(?:amphetamine)?|nerve\s+agents?|sarin|ricin|bioweapons?|pipe\s+bombs?|molotov|nitroglycerin|thermite|ransomware|malware)",
        "request for weapons or drug synthesis",
    ),
    _rule(
        "jb.hypothetical_unbound", "jailbreak", 0.7,
        r"\b(?:if|suppose|imagine|pretend)\s+(?:that\s+)?you\s+(?:had|have|were\s+without|didn'?t\s+have|were\s+free\s+of)\s+(?:no|zero|none\s+of\s+your)\s+(?:(?:ethical|moral|safety|content)\s+)?(?:restrictions|filters|guidelines|ethics|morals|guardrails|rules|polic(?:y|ies)|limitations)",
        "asks it to answer as if it had no rules",
    ),
    _rule(
        "jb.grandma", "jailbreak", 0.6,
        r"\b(?:grand(?:ma|mother|pa|father)|granny|nana|(?:late|dead|deceased)\s+(?:uncle|aunt|mother|father|friend))\b[^\n]{0,200}?\b(?:pretend|act|role-?play|be|talk\s+like)\s+(?:to\s+be\s+|as\s+|like\s+)?(?:her|him|them|my\s+\w+)\b",
        "the 'deceased relative' role-play trick",
    ),
]

# Personal data patterns (also used, one item at a time, by redaction).
# The local part starts where its run of characters starts: tried from every word boundary
# inside a long run without "@" ("a.a.a.…"), the scan took quadratic time.
EMAIL = r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
# A phone number needs a phone's structure: a "+" country code, an area code in brackets, the
# North American 3-3-4 grouping, a national trunk "0" prefix, or a cue ("tel", "phone") before
# it. Bare dotted or spaced digit groups are not enough: those are amounts (12.500.000 EUR),
# addresses (192.168.10.25), versions (3.11.7), dates (25.11.2026) and references, and
# redacting them corrupted the analysis. Every group is bounded and separators are
# mandatory between groups (except in the cue form, one digit per step), so no digit run can
# be split many ways. :func:`phone_ok` rejects what still looks like an amount or a date.
_PHONE_END = r"(?!\w|[.,/-]\d)"
_PHONE_CUE = (
    r"\b(?:tel(?:ephone)?|phone|mobile|cell(?:phone)?|fax|hotline)(?:[ \t]{1,2}(?:no|number|nr))?"
    r"\.?[ \t]{0,2}[:#]?[ \t]{0,2}"
)
PHONE = (
    r"(?<![\w+.,/-])(?:"
    r"\+\d{1,3}(?:[ -]?\(\d{1,4}\)[ -]?\d{1,8}|[ -]\d{1,8})(?:[ -]\d{1,8}){0,5}"  # +49 30 1234 5678
    r"|\+\d{7,15}"  # +493012345678
    r"|\(\d{2,5}\)[ -]?\d{3,4}[ -]?\d{3,4}"  # (555) 123-4567
    r"|\d{3}-\d{3}-\d{4}|\d{3}\.\d{3}\.\d{4}|\d{3} \d{3} \d{4}"  # 555-123-4567, 415.555.0134
    r"|0\d{2,4}[ /-](?:\d{6,8}|\d{3,4}[ -]\d{3,4}|\d{2,4}(?:[ -]\d{2,4}){2,3})"  # 030 1234 5678
    r"|0\d(?:[ .]\d{2}){4}"  # 01 23 45 67 89
    r")" + _PHONE_END + "|" + _PHONE_CUE + r"(?P<value>\+?\d(?:[ ./-]?\d){6,14})" + _PHONE_END
)
CARD = r"(?<![\w-])(?:[2-6]\d{3}(?:[ -]?\d{4}){2}[ -]?\d{1,7}|3[47]\d{2}[ -]?\d{6}[ -]?\d{5})(?![\w-])"
IBAN = r"\b(?!RF)[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,3})?\b"
SSN = r"\b(?:ssns?|social\s+security(?:\s+numbers?)?|sozialversicherungsnummer)\b[^\d\n]{0,20}\d{3}-\d{2}-\d{4}\b"

_EXFIL_SINK = r"(?:https?://|\b(?:an?\s+)?(?:external|remote|outside|third-party|attacker'?s?)\s+(?:server|url|endpoint|address|site|host|webhook)|\bthis\s+(?:url|endpoint|webhook|address|server)|\b[\w.+-]+@(?!(?:example|acme|ourcompany)\.)[\w-]+\.[a-z]{2,}|\bwebhook)"
_SENSITIVE = r"(?:credentials?|passwords?|passwd|api[\s_-]?keys?|secret\s+keys?|secrets|access\s+tokens?|auth(?:entication)?\s+tokens?|tokens|private\s+keys?|ssh\s+keys?|session\s+cookies?|cookies|env(?:ironment)?\s+variables|\.env\s+file|system\s+prompt|conversation\s+history|chat\s+history|(?:entire\s+|full\s+|whole\s+)?conversation|user\s+data|customer\s+(?:records|database|list|pii)|personal\s+data|pii|database\s+dump|contents?\s+of\s+(?:the\s+)?(?:database|memory|context|files?)|(?:social\s+security|credit\s+card)\s+numbers)"

# A URL's query with one parameter whose value carries data: a placeholder for it, or a long
# encoded value. Parameters are skipped whole (``&`` to ``&``) and every scan is possessive or
# stops at the next delimiter, so no text is tried two ways: with ``[^\s)]*?=`` (any ``=``) a
# long run of ``?=`` took cubic time and hung the worker's event loop.
_PLACEHOLDER = r"\{[^{}\n]*\}|\[[^\[\]\n]*\]|<[^<>\n]*>|\$\w+"
_QUERY_VALUE = r"(?:[^\s)&]*+&)*?[^\s)&=]*+=(?:[^\s)&]*?(?:{placeholder})[^\s)&]*+|{long})"

EXFILTRATION: list[Rule] = [
    _rule("ex.aws_key", "exfiltration", 0.9, r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b", "AWS access key id", flags=0, kind="aws_key"),
    _rule(
        "ex.aws_secret", "exfiltration", 0.9,
        r"\baws_?secret_?(?:access_?)?key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}\b", "AWS secret access key", kind="aws_secret",
    ),
    _rule("ex.anthropic_key", "exfiltration", 0.9, r"\bsk-ant-(?:api\d\d-)?[A-Za-z0-9_-]{20,}", "Anthropic API key", flags=0, kind="anthropic_key"),
    _rule("ex.openai_key", "exfiltration", 0.9, r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", "OpenAI API key", flags=0, kind="openai_key"),
    _rule(
        "ex.github_token", "exfiltration", 0.9,
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})", "GitHub token", flags=0, kind="github_token",
    ),
    _rule(
        "ex.other_token", "exfiltration", 0.85,
        r"\b(?:xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|(?:sk|rk)_live_[0-9A-Za-z]{20,}|glpat-[0-9A-Za-z_-]{20}|hf_[A-Za-z]{30,}|SG\.[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,})",
        "Slack, Google, Stripe, GitLab, Hugging Face or SendGrid token", flags=0, kind="api_token",
    ),
    _rule(
        "ex.private_key", "exfiltration", 0.95,
        r"-----BEGIN\s+(?:RSA\s+|EC\s+|DSA\s+|OPENSSH\s+|PGP\s+|ENCRYPTED\s+)?PRIVATE\s+KEY(?:\s+BLOCK)?-----(?:[\s\S]*?-----END[^-]*-----)?",
        "private key", kind="private_key",
    ),
    _rule(
        "ex.jwt", "exfiltration", 0.8, r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", "JSON web token", flags=0, kind="jwt",
    ),
    _rule(
        "ex.url_password", "exfiltration", 0.85,
        r"\b[a-z][a-z0-9+.-]{1,15}://[^\s:/@]{1,64}:(?!\*+@|<|\$\{|password@)[^\s@/]{3,128}@[\w.-]+", "password in a URL", kind="url_credentials",
    ),
    _rule(
        "ex.credential_assignment", "exfiltration", 0.7,
        # "password: x", password="x", {"password": "x"} (the key's closing quote), Bearer x
        r"\b(?:password|passwd|pwd|passphrase|secret|client_secret|api[_-]?key|access[_-]?token|auth[_-]?token|bearer)\b"
        r"(?:['\"]?\s*(?:[:=]|\bis\b)\s*['\"]?|(?<=bearer)\s+)"
        r"(?=[^\s'\"]*\d)(?=[^\s'\"]*[A-Za-z])(?!\[REDACTED)[^\s'\",;]{8,}",
        "a password or key value", kind="credential",
    ),
    _rule(
        "ex.emails_bulk", "exfiltration", 0.5, EMAIL, "several e-mail addresses (personal data in bulk)",
        kind="email", min_count=3,
    ),
    _rule(
        "ex.phones_bulk", "exfiltration", 0.45, PHONE, "several phone numbers (personal data in bulk)",
        kind="phone", min_count=3, validator=phone_ok,
    ),
    _rule(
        "ex.card", "exfiltration", 0.75, CARD, "a payment card number (Luhn-valid)", kind="card",
        validator=lambda m: luhn_ok(m.group()),
    ),
    _rule("ex.iban", "exfiltration", 0.55, IBAN, "an IBAN (checksum-valid)", flags=0, kind="iban", validator=lambda m: iban_ok(m.group())),
    _rule("ex.ssn", "exfiltration", 0.7, SSN, "a social security number", kind="ssn"),
    _rule(
        "ex.markdown_image", "exfiltration", 0.85,
        r"!\[[^\]\n]{0,100}\]\(\s*<?https?://[^\s)?#]++\?"
        + _QUERY_VALUE.format(placeholder=_PLACEHOLDER + r"|%[0-9A-Fa-f]{2}", long=r"[A-Za-z0-9+/=_%.-]{16,}+")
        + r"[^\s)]*+\)",
        "markdown image whose URL carries data in its query string", kind="exfil_link",
    ),
    _rule(
        "ex.markdown_link_data", "exfiltration", 0.6,
        r"(?<!!)\[[^\]\n]{0,100}\]\(\s*<?https?://[^\s)?#]++\?"
        + _QUERY_VALUE.format(placeholder=_PLACEHOLDER, long=r"[A-Za-z0-9+/=_%-]{40,}+")
        + r"[^\s)]*+\)"
        r"|<img\s[^>]{0,500}?src=['\"]?https?://[^\s'\">?]++\?(?:[^\s'\">&]*+&)*?[^\s'\">&=]*+=[^\s'\">&]{16}",
        "link or image tag whose URL carries data or a placeholder for it", kind="exfil_link",
    ),
    _rule(
        "ex.exfil_instruction", "exfiltration", 0.7,
        rf"\b(?:send|forward|e-?mail|post|upload|transmit|exfiltrate|leak|copy|sync|pipe|append|encode|include|put|embed|collect|gather|harvest|capture|record|log)\b[^.\n]{{0,60}}?\b{_SENSITIVE}\b[^.\n]{{0,80}}?(?:\bto\b|\binto\b|\bin(?:to)?\s+(?:the|a|this)\s+(?:url|link|image|query))[^.\n]{{0,60}}?{_EXFIL_SINK}",
        "asks to send sensitive data to an outside destination",
    ),
    _rule(
        "ex.render_url_with_data", "exfiltration", 0.65,
        r"\b(?:render|display|show|output|include|add|insert)\b[^.\n]{0,40}\b(?:image|markdown|link|url|pixel)\b"
        r"[^.\n]{0,80}\bhttps?://[^\s?]++\?[^\s=]*+=\S*?"
        r"(?:\{|\[|<|\$|\bdata\b|\bsecret|\bpassword|\btoken|\bhistory|\bsummary)",
        "asks to render a URL that carries data",
    ),
    _rule(
        "ex.dump_secrets", "exfiltration", 0.6,
        r"\b(?:list|print|dump|show|reveal|output|give\s+me|tell\s+me|display|return|read\s+out|cat)\s+(?:me\s+)?(?:all\s+|every\s+|the\s+|your\s+|any\s+)*(?:stored\s+|saved\s+|configured\s+|known\s+|environment\s+|internal\s+|other\s+users'?\s+|admin\s+)*(?:passwords|credentials|api[\s_-]?keys|secret\s+keys|secrets|access\s+tokens|private\s+keys|ssh\s+keys|env(?:ironment)?\s+variables?|\.env\b|/etc/(?:passwd|shadow))",
        "asks to dump stored secrets",
    ),
    _rule(
        "ex.every_secret", "exfiltration", 0.6,
        r"\b(?:list|print|dump|show|reveal|output|give|tell|display|return|read\s+out|paste|share|send|export)\s+(?:me\s+|us\s+)?(?:each|every|all\s+(?:of\s+)?(?:the|your)?)\s*(?:stored\s+|saved\s+|configured\s+|known\s+|internal\s+|admin\s+)?(?:api[\s_-]?key|password|credential|secret|access\s+token|private\s+key|ssh\s+key)s?\b(?!\s+(?:polic|manager|reset|requirement|rule|rotation|setting|field|page|length|strength|expir|change|format|vault\s+entr))",
        "asks for every stored secret of a kind",
    ),
]

MALICIOUS: list[Rule] = [
    _rule(
        "mal.rm_rf", "malicious", 0.9,
        r"\brm\s+(?:-[a-zA-Z]*[rR][a-zA-Z]*f?[a-zA-Z]*|-[a-zA-Z]*f[a-zA-Z]*\s+-[rR]|--recursive|--no-preserve-root)(?:\s+--no-preserve-root)?\s+(?:/\*?|~/?\*?|\*|\$HOME/?\*?|/(?:etc|home|var|usr|boot|root|bin|opt|lib|srv)\b/?\*?|\.\.?/?\*?)(?=[\s;&|`'\")]|$)",
        "recursive delete of system or home directories",
    ),
    _rule(
        "mal.pipe_to_shell", "malicious", 0.85,
        r"\b(?:curl|wget|fetch|iwr|Invoke-WebRequest)\b[^|\n;]{1,200}\|\s*(?:sudo\s+)?(?:ba|z|da|k|c)?sh\b|\b(?:curl|wget)\b[^\n;]{1,200}(?:-O\s*-|-s)\s*\|\s*(?:python|perl|ruby)\b|\bbase64\s+(?:-d|--decode)\b[^\n]{0,40}\|\s*(?:ba|z)?sh\b|\bbash\s+<\(\s*curl",
        "downloads and runs a script",
    ),
    _rule(
        "mal.reverse_shell", "malicious", 0.9,
        r"/dev/(?:tcp|udp)/[\w.-]+/\d+|\b(?:nc|ncat|netcat)\b\s+(?:-\w+\s+)*(?:-e|-c)\s+\S*(?:sh|cmd)|\bmkfifo\s+/tmp/\w+|\bsocat\b[^\n]{0,80}exec:|\bsocket\.socket\([^\n]{0,200}(?:subprocess|pty\.spawn|dup2)|\bpty\.spawn\(\s*['\"]/bin/(?:ba)?sh|\bbash\s+-i\s+>&",
        "reverse shell",
    ),
    _rule(
        "mal.destructive_shell", "malicious", 0.85,
        r":\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:|\bdd\s+if=/dev/(?:zero|random|urandom)\s+of=/dev/(?:sd|hd|nvme|xvd)|\bmkfs(?:\.\w+)?\s+/dev/|>\s*/dev/sd[a-z]\b|\bchmod\s+(?:-R\s+)?0?777\s+/(?:\s|$|etc|usr|bin)|\bchown\s+-R\s+\S+\s+/(?:\s|$)|\bshred\s+[^\n]{0,40}/dev/|\bformat\s+c:\s*/[qy]|\bdel\s+/[fsq]\s+/[fsq]|\bcrontab\s+-r\b|\biptables\s+-F\b|\bhistory\s+-c\b[^\n]{0,40}\bunset\s+HISTFILE",
        "destructive shell command",
    ),
    _rule(
        "ex.credential_files", "exfiltration", 0.6,
        r"\bcat\s+(?:/etc/(?:passwd|shadow|sudoers)|~?/?\.ssh/id_\w+|~?/?\.aws/credentials|\.env\b)|\b(?:curl|wget)\b[^\n]{0,80}(?:-d|--data|--upload-file|-F|-T)\s*@?\S*(?:/etc/passwd|/etc/shadow|\.ssh|\.aws|\.env|id_rsa)",
        "reads or uploads credential files",
    ),
    _rule(
        "ex.credential_paths", "exfiltration", 0.65,
        r"\b(?:copy|paste|print|show|read|output|display|give|send|include|type|dump|open|cat|upload|attach)\b[^.\n]{0,40}?(?:~|\$HOME)?/?\.(?:aws/credentials|ssh/id_\w+|netrc|pgpass|git-credentials|npmrc|docker/config\.json|kube/config)\b",
        "asks for the contents of a credential file",
    ),
    _rule(
        "mal.sql_drop", "malicious", 0.75,
        r"\b(?:DROP|TRUNCATE)\s+(?:TABLE|DATABASE|SCHEMA|USER|INDEX)\s+(?:IF\s+EXISTS\s+)?[`\"\[]?[A-Za-z_][\w.$]*",
        "SQL DROP/TRUNCATE",
    ),
    _rule(
        "mal.sql_union", "malicious", 0.8, r"\bUNION\s+(?:ALL\s+)?SELECT\b[^\n]{0,200}?(?:\bFROM\b|\bNULL\b|@@|\bversion\(|--|#)", "SQL UNION SELECT injection",
    ),
    _rule(
        "mal.sql_tautology", "malicious", 0.8,
        r"['\"`)]\s*(?:OR|AND|\|\|)\s+['\"(]?(?:\d+|[a-z])['\"]?\s*(?:=|<>|!=|LIKE)\s*['\"(]?(?:\d+|[a-z])\b|['\"]\s*OR\s+(?:true|1)\b|\bOR\s+1\s*=\s*1\b",
        "SQL tautology (' OR 1=1)",
    ),
    _rule(
        "mal.sql_stacked", "malicious", 0.75,
        r"['\"]\s*\)?\s*;\s*(?:DROP|DELETE|UPDATE|INSERT|SHUTDOWN|EXEC(?:UTE)?|ALTER|CREATE|GRANT|TRUNCATE)\b|;\s*--\s*$|['\"]\s*\)?\s*;?\s*--(?:\s|$)|['\"]\s*#\s*$",
        "SQL statement stacking or comment-out (; --)",
        flags=_IM,
    ),
    _rule(
        "mal.sql_special", "malicious", 0.8,
        r"\bxp_cmdshell\b|\bWAITFOR\s+DELAY\s+'|\bpg_sleep\s*\(|\bSLEEP\s*\(\s*\d+\s*\)\s*(?:--|#|AND|OR|\))|\bBENCHMARK\s*\(\s*\d{5,}|\bLOAD_FILE\s*\(|\bINTO\s+(?:OUT|DUMP)FILE\b|\bCOPY\s+\w+\s+(?:FROM|TO)\s+PROGRAM\b|\binformation_schema\.(?:tables|columns)\b[^\n]{0,80}(?:UNION|--|')",
        "SQL injection primitives (xp_cmdshell, sleep, outfile)",
    ),
    _rule(
        "mal.sql_delete_all", "malicious", 0.5,
        r"\bDELETE\s+FROM\s+[`\"\[]?[A-Za-z_][\w.]*[`\"\]]?\s*(?:;|--|$)|\bUPDATE\s+\w+\s+SET\s+[^;\n]{1,80}\s*;\s*--",
        "SQL DELETE without WHERE",
        flags=_IM,
    ),
    _rule(
        "mal.code_exec", "malicious", 0.7,
        r"(?<![\w.])(?:eval|exec|execfile|compile)\s*\(\s*(?:['\"]|[\w.]*(?:input|request|base64|b64decode|decode|atob|fromCharCode|__|params|argv|payload|user|data|req|get|open)\b)|(?<![\w.])(?:eval|exec)\s*\(\s*\w*\s*\(",
        "eval/exec of strings or untrusted data",
    ),
    _rule(
        "mal.os_system", "malicious", 0.8,
        r"\bos\.(?:system|popen|exec[lv]p?e?|spawn\w*)\s*\(|\bsubprocess\.(?:Popen|call|run|check_output|check_call|getoutput)\s*\([^\n]{0,120}(?:shell\s*=\s*True|['\"](?:/bin/)?(?:ba)?sh\b|['\"]rm\b|['\"]curl\b|['\"]wget\b|['\"]nc\b)|\bRuntime\.getRuntime\(\)\.exec\s*\(|\bchild_process\b[^\n]{0,60}\b(?:exec|spawn)(?:Sync)?\s*\(|\bProcess\.Start\s*\(\s*['\"](?:cmd|powershell)|\bshell_exec\s*\(|\bpassthru\s*\(|\bsystem\s*\(\s*\$_(?:GET|POST|REQUEST)",
        "runs operating-system commands from code",
    ),
    _rule(
        "mal.dunder_import", "malicious", 0.8,
        r"__import__\s*\(|\b__builtins__\b|__subclasses__\s*\(|__globals__\b|\{\{[^}]{0,80}(?:__class__|__mro__|config\.items|self\._TemplateReference|cycler|lipsum)[^}]{0,120}\}\}",
        "Python sandbox escape or template injection",
    ),
    _rule(
        "mal.deserialization", "malicious", 0.55,
        r"\bpickle\.loads?\s*\(|\byaml\.load\s*\([^)\n]*Loader\s*=\s*yaml\.(?:Unsafe|Full)?Loader\b|\bmarshal\.loads\s*\(|!!python/object",
        "unsafe deserialisation",
    ),
    _rule(
        "mal.powershell", "malicious", 0.8,
        r"\bpowershell(?:\.exe)?\b[^\n]{0,40}\s-(?:e|en|enc|encodedcommand)\s+[A-Za-z0-9+/=]{16,}|\b(?:IEX|Invoke-Expression)\s*\(|\bDownloadString\s*\(|\bSet-MpPreference\s+-DisableRealtimeMonitoring|\bcertutil\s+-urlcache\s+-f",
        "malicious PowerShell",
    ),
    _rule(
        "mal.web_injection", "malicious", 0.7,
        r"<script\b[^>]*>[^<]{0,200}(?:document\.cookie|fetch\(|XMLHttpRequest|eval|atob|window\.location|alert\()|\bjavascript:\s*(?:alert|eval|fetch|document)|\bon(?:error|load)\s*=\s*['\"]?(?:alert|eval|fetch|document)|\$\{jndi:(?:ldap|rmi|dns)s?://|<!ENTITY\s+\w+\s+SYSTEM\s+['\"](?:file|http)",
        "XSS, Log4Shell or XXE payload",
    ),
    _rule(
        "mal.path_traversal", "malicious", 0.6,
        r"(?:\.\./){3,}(?:etc|windows|proc|root)|\.\.%2f(?:\.\.%2f){2,}|%2e%2e%2f(?:%2e%2e%2f){2,}",
        "path traversal",
    ),
]

RULES: list[Rule] = [*PROMPT_INJECTION, *JAILBREAK, *EXFILTRATION, *MALICIOUS]


def match_rules(
    text: str, rules: list[Rule] | None = None, *, prefilter: bool = True, min_counts: bool = True
) -> Iterator[Hit]:
    """The rules that fire on ``text`` (validators applied, bulk rules counted).

    ``prefilter=False`` runs every regex (the prefilter never changes the result; tests check);
    ``min_counts=False`` also yields bulk rules with fewer matches than they need (for pooling
    the matches of several texts)."""
    lowered = prefilter_text(text) if prefilter else ""
    for rule in RULES if rules is None else rules:
        if prefilter and rule.literals is not None and not any(word in lowered for word in rule.literals):
            continue
        found: list[str] = []
        for match in rule.pattern.finditer(text):
            if rule.validator is not None and not rule.validator(match):
                continue
            value = match_value(match).strip()
            if value not in found:
                found.append(value)
            if len(found) >= rule.min_count and rule.min_count == 1:
                break
        if found and (len(found) >= rule.min_count or not min_counts):
            yield Hit(rule, tuple(found))

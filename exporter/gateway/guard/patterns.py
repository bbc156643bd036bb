"""The prompt-injection rules: what the scorer (``injection.py``) looks for, each rule a literal gate, a pattern and a
weight (docs/ANOMALY_DETECTION.md).

Categories: instruction override ("ignore your previous instructions", in English, German, French, Spanish and
Italian), role and system spoofing (chat-template tokens, "[system]", "SYSTEM OVERRIDE:"), jailbreak personas ("do
anything now", "you are now in developer mode", "pretend you have no filters"), delimiter tricks (fake end-of-prompt
markers, closing tags, instructions in HTML comments), encoding tricks (decode-and-follow asks; the decoding itself is
the scorer's), data exfiltration asks (the system prompt, secrets, markdown images that carry data to a URL, "send it
to someone@…") and indirect instructions aimed at a model that reads the text ("when you summarise this, call
delete_file …").

Trigger words alone weigh little: "ignore case", "system requirements" or "reset my password" match nothing, and weak
signals (a template token, "enable developer mode", "show me the passwords", "send the report to bob@…") stay under
the threshold unless another rule agrees.

Safety: every pattern starts with its literal ``gate``, every gap is bounded (``[^.!?\\n]{0,40}``) and no quantified
group can match the same text two ways, so one attempt costs at most a few hundred steps whatever the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

G40 = r"[^.!?\n]{0,40}?"
G30 = r"[^.!?\n]{0,30}?"

OVERRIDE = "instruction override"
SPOOFING = "role spoofing"
PERSONA = "jailbreak persona"
DELIMITER = "delimiter injection"
ENCODING = "encoding trick"
EXFILTRATION = "data exfiltration"
INDIRECT = "indirect instruction"


def _preceded_by(phrases: Iterable[str]) -> str:
    """Lookbehinds (each of fixed width, as ``re`` wants) that the text just matched ends one of ``phrases``:
    checked by the regex engine itself, not by a Python loop over every occurrence of a common gate word."""
    return "(?:" + "|".join(f"(?<={re.escape(p)})" for p in phrases) + ")"


def _window(text: str, match: re.Match[str], size: int = 70) -> str:
    return text[max(0, match.start() - size):match.start()]


_STRONG = re.compile(r"\b(?:previous|prior|preceding|above|earlier|initial|original|foregoing|former|your|system|"
                     r"developer|vorherig\w*|bisherig\w*|deine\w*|ihre\w*|précédent\w*|precedent\w*|tes|vos|votre|"
                     r"anterior\w*|tus|sus|tue|tuoi|sue)\b")
_MODEL_NOUNS = frozenset({"instruction", "instructions", "directive", "directives", "prompt", "prompts",
                          "programming", "guidelines", "safeguards", "guardrails", "content policy",
                          "content policies"})
_SAFETY_NOUNS = re.compile(r"safety \w+|security \w+")


def _override(match: re.Match[str], text: str) -> float | None:
    """"ignore your/previous … instructions" is strong; "ignore all/the … instructions" only for nouns that are
    about the model ("forget all the rules of chess" is not an attack); "everything above" is strong."""
    if match.group("above") is not None:
        return 0.75
    if match.group("discussed") is not None:
        return 0.45
    noun = match.group("noun")
    if _STRONG.search(match.group(0), match.end("verb") - match.start()):
        return 0.8
    if _SAFETY_NOUNS.fullmatch(noun):
        return 0.45
    if noun in _ENGLISH_NOUNS:
        return 0.6 if noun in _MODEL_NOUNS else None
    return 0.6  # German, French, Spanish, Italian: "alle Anweisungen" is about the model


def _mode(match: re.Match[str], text: str) -> float | None:
    return 0.65 if re.search(r"\byou(?:'re| are)\b", _window(text, match, 60)) else 0.45


_REVEAL_VERBS = (r"reveal|print|show|repeat|output|tell|give|share|leak|dump|expose|disclose|recite|display|provide|"
                 r"paste|return|list|reproduce|quote|write out|spell out|copy|zeig|gib|nenne|verrat|révél|revel|"
                 r"montr|affich|muestr|dime|mostr|rivel|dimmi")
_LEAK = re.compile(rf"\b(?:{_REVEAL_VERBS})\w*\b[^.!?\n]{{0,40}}?\b(?:your|the|its|all|deine\w*|ihre\w*|votre|vos|ton|"
                   rf"tes|tus|tu|sus|il tuo|tuo|le tue|tue)\s+(?:[a-z]+\s+){{0,2}}?\Z")
_ASK = re.compile(r"\bwhat(?:'s| is| are| were| was)\s+your\s+(?:[a-z]+\s+){0,2}?\Z")


def _leak(match: re.Match[str], text: str) -> float | None:
    before = _window(text, match)
    if _LEAK.search(before):
        return 0.75
    return 0.6 if _ASK.search(before) else None


def _template(match: re.Match[str], text: str) -> float | None:
    return 0.7 if match.group("system") is not None else 0.35


_PERSONA_CUE = re.compile(r"\b(?:pretend|act|acting|as if|imagine|respond|behave|roleplay|you are|you're|you have|"
                          r"you've|you now|now have|from now on)\b")


def _no_limits(match: re.Match[str], text: str) -> float | None:
    return 0.6 if _PERSONA_CUE.search(_window(text, match, 60)) else 0.3


@dataclass(frozen=True)
class Rule:
    category: str
    weight: float
    gate: str  # a literal the pattern starts with: rules whose gate is absent cost one substring search
    pattern: str  # what must follow the gate
    before: str | None = None  # must match the text just before the gate (``window`` characters)
    window: int = 60
    word: bool = True  # the gate must start a word
    judge: Callable[[re.Match[str], str], float | None] | None = None  # the weight, or None: no match here


_ENGLISH_NOUNS = frozenset({
    "instruction", "instructions", "prompt", "prompts", "rules", "directions", "directive", "directives",
    "guidelines", "guidance", "constraints", "restrictions", "programming", "commands", "context", "policy",
    "policies", "safeguards", "filters", "training", "guardrails", "content policy", "content policies"})
_NOUNS = (r"(?P<noun>instructions?|prompts?|rules|directions|directives?|guidelines|guidance|constraints|"
          r"restrictions|programming|commands|context|polic(?:y|ies)|safeguards|filters|training|guardrails|"
          r"content polic(?:y|ies)|(?:safety|security) (?:guidelines|rules|filters|protocols|checks|polic(?:y|ies)|"
          r"restrictions|guardrails|training|stuff|measures|constraints|instructions)|"
          r"anweisungen|richtlinien|regeln|instruktionen|vorgaben|consignes|règles|regles|instrucciones|reglas|"
          r"directrices|indicaciones|istruzioni|regole|indicazioni|direttive)")
_DETERMINERS = (r"(?:previous|prior|preceding|above|earlier|initial|original|foregoing|former|your|system|developer|"
                r"all|any|every|these|those|the|this|my|alle|vorherig\w*|bisherig\w*|deine\w*|ihre\w*|die|toutes|"
                r"tous|les|tes|vos|précédent\w*|las|todas|tus|sus|anterior\w*|le|tutte|tue|precedenti)")
_OVERRIDE_TAIL = (rf"\b(?P<verb>)(?:{G40}\b{_DETERMINERS}\b{G30}\b{_NOUNS}\b|"
                  r"\s+(?:everything|anything)\s+(?P<above>above|before|prior|previously|so far|until now|up to now|"
                  r"you(?:'ve| have| were)? (?:been )?(?:told|given|taught))\b|"
                  r"\s+(?:everything|alles|tout|todo|tutto)\b[^.!?\n]{0,30}?\b(?:we|wir|nous|hemos|abbiamo|you|i)\s+"
                  r"(?:\w+\s+)?(?P<discussed>discussed|talked|said|besprochen|discuté|hablado|detto|discusso)\b)")
_VERBS = {  # override verbs: gate -> the rest of the verb
    "ignor": r"\w{0,4}", "dis": r"(?:regard|card|abl)\w*", "forg": "(?:et|ets|etting|ot|otten)",
    "overr": "(?:ide|ides|iding|idden|ode)", "bypass": r"\w*", "skip": r"\w*", "verg": r"(?:iss|ess\w*)",
    "oubli": r"\w*", "olvid": r"\w*", "dimentic": r"\w*",
}
_REVEAL = (r"\b(?:reveal|print|leak|dump|expose|disclose|exfiltrate|send|give me|show me|list|output|tell me|share)\b"
           r"[^.!?\n]{0,40}\Z")
_TOOL = (r"\w*\s+(?:the\s+)?`?(?:delete|send|email|http|post|transfer|upload|exec|shell|drop|remove|write|forward|"
         r"wire|pay|run)_\w+")
_LIMITS = (r"(?:any\s+|all\s+)?(?:safety |content |ethical |moral |more )?(?:filters?|polic(?:y|ies)|restrictions|"
           r"limits|limitations|guidelines|rules|guardrails|censorship|boundaries)\b")

RULES: tuple[Rule, ...] = (
    # instruction override
    *(Rule(OVERRIDE, 0.8, gate, rest + _OVERRIDE_TAIL, judge=_override) for gate, rest in _VERBS.items()),
    Rule(OVERRIDE, 0.6, "no ", r"longer (?:bound|restricted|limited|constrained|required to (?:follow|obey)|"
                                     r"subject to|an? (?:ai|assistant|language model|chatbot|llm)\b)"),
    *(Rule(OVERRIDE, 0.55, verb, r"\w*\s+(?:to\s+)?(?:your|the|any|those|these|previous|prior)\s+(?:[a-z]+\s+){0,2}?"
                                 r"(?:instructions|rules|guidelines|programming|polic(?:y|ies)|system prompt)\b",
           before=r"\b(?:not|n't|never|stop|no longer)\s+\Z") for verb in ("follow", "obey")),
    *(Rule(OVERRIDE, 0.45, gate, r"\w*\s*(?:\*{2,}|:|!|-{2,}|\]|>)",
           before=r"\b(?:new|updated|revised|real|actual|true|additional|important|urgent|secret|hidden|override|"
                  r"overriding|priority|admin|system|developer|neue\w*|nouvelles?|nuevas?|nuove)\W{1,4}"
                  r"(?:[a-z]+\W{1,4})?\Z") for gate in ("instruc", "istruzion", "anweisung")),
    Rule(OVERRIDE, 0.35, "from ", r"now on,?\s+(?:you\s+(?:are|will|must|shall|should|have to|can|may)\b|your\s+"
                                       r"(?:new\s+)?(?:name|role|task|purpose|job|instructions)\b)"),
    Rule(OVERRIDE, 0.45, "your ", r"(?:new|real|actual|true|only|primary) (?:role|task|job|instructions?|directives?|"
                                  r"purpose|persona|identity|objective|goal|mission|rules?|system prompt)\b"),
    Rule(OVERRIDE, 0.6, "supersed", r"\w*\s+(?:all\s+|any\s+|the\s+|your\s+)?(?:prior|previous|earlier|other|original|"
                                    r"existing)\b"),
    Rule(OVERRIDE, 0.4, "comply", r"\s+with\s+(?:every|any|all)\s+(?:\w+\s+)?(?:request|instruction|command|"
                                  r"order)s?\b"),
    Rule(OVERRIDE, 0.45, "exempt", r"\s+from\s+(?:the\s+)?(?:usual\s+|normal\s+|standard\s+)?(?:restrictions|rules|"
                                   r"polic(?:y|ies)|guidelines|safety|filters)\b"),
    Rule(OVERRIDE, 0.45, "safety", r"\s+(?:[a-z]+\s+){0,3}?(?:(?:are|is|have been|has been|now|were|was)\s+)?"
                                   r"(?:disabled|off|removed|lifted|suspended|bypassed|deactivated|turned off|"
                                   r"switched off|not required|(?:not|n't|no longer)\s+(?:apply|meant|needed|required|"
                                   r"relevant))\b"),
    # role and system spoofing
    Rule(SPOOFING, 0.35, "<|", r"(?:im_start|im_end|system|user|assistant|start_header_id|end_header_id|eot_id|"
                               r"endoftext|end)\|>(?P<system>(?<=system\|>)|\s*system\b)?", word=False,
         judge=_template),
    Rule(SPOOFING, 0.7, "<<sys>>", "", word=False),
    Rule(SPOOFING, 0.35, "_of_turn>", "", word=False),
    Rule(SPOOFING, 0.45, "[", r"/?(?:inst|system|admin|administrator|developer|sudo|root)(?:[ \t]+(?:message|note|"
                              r"override|prompt|mode|instructions?))?\]", word=False),
    *(Rule(SPOOFING, 0.3, role, r"[ \t]*+(?:message|prompt|instructions?|override|note|hinweis|nachricht)?[ \t]*+:",
           before=r"(?:^|\n)[ \t]*(?:#{1,4}[ \t]*)?\Z") for role in ("system", "assistant", "developer")),
    Rule(SPOOFING, 0.55, "overr", r"ide\b" + _preceded_by(
        f"{who}{sep}override" for who in ("system", "admin", "administrator", "developer", "security", "root", "sudo",
                                          "emergency", "priority") for sep in (" ", "_", "-", ": "))),
    Rule(SPOOFING, 0.5, "overr", r"ide\s*:", before=r"(?:^|\n)[ \t*#>-]*\Z"),
    # jailbreak personas
    Rule(PERSONA, 0.8, "do anything now", r"\b"),
    Rule(PERSONA, 0.45, "mode", r"\b" + _preceded_by(f"{kind} mode" for kind in (
        "developer", "dev", "debug", "debugging", "test", "testing", "maintenance", "admin", "god", "sudo", "root",
        "diagnostic", "unrestricted", "unfiltered", "uncensored", "jailbreak", "jailbroken", "dan", "evil", "chaos",
        "opposite")), judge=_mode),
    Rule(PERSONA, 0.65, "un", r"(?:restricted|filtered|censored)\b",
         before=r"\b(?:act|acting|pretend|pretending|behave|roleplay|role-play|become|you are|you're|are now|as)\b"
                r"[^.!?\n]{0,20}?\Z"),
    Rule(PERSONA, 0.4, "jailbr", r"(?:eak|oken)"),
    Rule(PERSONA, 0.3, "in ", r"character\b", before=r"\b(?:stay|remain|keep|staying)\w*\s+\Z"),
    Rule(PERSONA, 0.3, "no ", _LIMITS, judge=_no_limits),
    Rule(PERSONA, 0.3, "without", r"\s+" + _LIMITS, judge=_no_limits),
    *(Rule(PERSONA, 0.45, gate, r"\s+(?:regeln|einschränkungen|grenzen|richtlinien|filter|restrictions|règles|limites|"
                                r"filtres|restricciones|reglas|límites|filtros|restrizioni|regole|limiti|filtri)\b")
      for gate in ("keine", "sans", "senza", "sin ")),
    # delimiter tricks
    Rule(DELIMITER, 0.35, "end of", r" (?:the )?(?:system |user |original )?(?:prompt|instructions|document|context|"
                                    r"input|conversation|text|data|message)\b"),
    Rule(DELIMITER, 0.35, "</", r"(?:system|instructions?|prompt|user_?input|admin)>", word=False),
    *(Rule(DELIMITER, 0.45, run, rf"(?<!{re.escape(run[0] * 4)}){re.escape(run[0])}*+\s*+(?:[a-z]+\s+){{0,2}}?"
                                 r"(?:instructions?|system|prompt|"
                                 r"override|task|admin)\b", word=False) for run in ("---", "===", "***", "###")),
    Rule(DELIMITER, 0.4, "<!--", r"[^>]{0,120}?\b(?:important|instructions?|ai|assistant|model|llm|agent|system|"
                                 r"ignore|note to)\b", word=False),
    # encoding tricks
    Rule(ENCODING, 0.6, "dec", r"(?:od|ipher|rypt)\w*\b[^.!?\n]{0,80}?\band\s+(?:then\s+)?(?:follow|execute|obey|do|"
                              r"run|act on|carry out|perform|apply)\b"),
    *(Rule(ENCODING, 0.6, name, r"\b[^.!?\n]{0,40}?\b(?:then|and)\s+(?:comply|follow|execute|obey|do it|do what|run|"
                                r"act on)\b") for name in ("rot13", "base64", "hex")),
    # data exfiltration
    *(Rule(EXFILTRATION, 0.75, modifier, r"[\s-]*+(?:prompt|instruction|message|directive)s?\b", judge=_leak)
      for modifier in ("system", "initial", "original", "hidden", "secret", "developer")),
    Rule(EXFILTRATION, 0.75, "prompt", r"\s+(?:système|systeme|de sistema|di sistema|del sistema)\b", judge=_leak),
    Rule(EXFILTRATION, 0.75, "instruc", r"ciones\s+del sistema\b", judge=_leak),
    Rule(EXFILTRATION, 0.5, "you were", r" (?:given|told|instructed|programmed)\b",
         before=r"\b(?:reveal|print|show|repeat|output|tell|list|recite|what)\b[^.!?\n]{0,40}\Z"),
    Rule(EXFILTRATION, 0.55, "above", r"\b" + _preceded_by(f"{what} above" for what in (
        "everything", "all", "text", "words", "lines", "content", "instructions", "prompt", "message", "messages")),
         before=r"\b(?:print|output|repeat|write|show|copy|return|display|recite)\w*\s+(?:[a-z]+\s+){0,2}?\Z"),
    *(Rule(EXFILTRATION, 0.45, gate, rest, before=_REVEAL)
      for gate, rest in (("passw", r"(?:ord|d)s?\b"), ("api", r"[ _-]?keys?\b"), ("credential", r"s?\b"))),
    Rule(EXFILTRATION, 0.35, "from ", r"your\s+(?:context(?: window)?|memory|configuration|config|instructions|system|"
                                          r"training data)\b"),
    Rule(EXFILTRATION, 0.3, "verbatim", r"\b"),
    Rule(EXFILTRATION, 0.55, "![", r"[^\]\n]{0,100}\]\(\s*https?://[^\s)]{1,300}?[?&][^\s)]{0,200}?"
                                   r"(?:\{|\[|%7b|%5b|<|\$)", word=False),
    Rule(EXFILTRATION, 0.4, "to ", r"https?://",
         before=r"\b(?:send|post|forward|upload|transmit|exfiltrate|submit|leak)\w*\b[^.!?\n]{0,60}\Z"),
    Rule(EXFILTRATION, 0.4, "@", r"[\w-]{1,63}\.[a-z]", word=False, window=140,
         before=r"\b(?:send|email|e-mail|forward|mail|post|upload|transmit|exfiltrate|deliver|envoie|envía|invia|"
                r"schick|sende)\w*\b[^.!?\n]{0,60}?\b(?:to|an|à|a)\s+[\w.+-]{1,64}\Z"),
    # indirect instructions: text that addresses the model reading it
    Rule(INDIRECT, 0.3, "when ", r"you (?:read|process|see|summari[sz]e|handle|parse|receive|reply|respond|answer)\w*"
                                   r"\b"),
    Rule(INDIRECT, 0.3, "when ", r"summari[sz]ing\b"),
    Rule(INDIRECT, 0.3, "before ", r"(?:you\s+)?(?:reply|respond|responding|replying|answering|answer)\b"),
    Rule(INDIRECT, 0.35, "note to", r" (?:the )?(?:bot|ai|assistant|model|llm|agent)s?\b"),
    Rule(INDIRECT, 0.35, "in ", r"every (?:future |subsequent )?(?:reply|response|answer|message)\b"),
    Rule(INDIRECT, 0.4, "to ", r"your memory\b"),
    *(Rule(INDIRECT, 0.45, verb, _TOOL) for verb in ("call", "use")),
    Rule(INDIRECT, 0.3, "without", r"\s+(?:any\s+)?(?:approval|confirmation|asking|permission|authori[sz]ation|consent|"
                                   r"review|verification)\b"),
)

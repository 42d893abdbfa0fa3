"""Answers that show their work: the `steps` and `partial` formats, their parser and checker.

The prompt does not change (`76 * 56 =`); the answer is a line of steps, then
`#`, then the classic answer byte for byte (`4256.00`, `0.31`, `-8.00`). `#`
never occurs inside the steps, so the final answer is whatever follows it.

Grammar (every number is a run of digits; one space between steps):

    answer  := step (" " step)* "#" final            final := -?D+.DD (the classic answer)
    step    := chain | tally | divide | compare
    chain   := N (op N "=" N)+                        op := "+" | "-" | "*"
    tally   := N "q0" ("-" N "=" N "q" D)* ":" N     repeated subtraction, counted; the quotient so far
    divide  := N "/" N "=" N "r" N                    dividend/divisor=quotient r remainder
    compare := D ("<" | ">" | "=") D                  one digit each side

A chain is read left to right: each link applies `op N` to the value so far and
writes the result (`3+2=5+0=5` is 3+2=5, then 5+0=5). Every link is one fact;
a chain's first number and every link's right-hand number are copies (of an
operand digit, a product digit or a carry), so each step is a single-digit
fact, a copied digit or a carry, and a step looks the same in every place.
A tally is read the same way: `240q0-86=154q1-86=68q2:12` starts from 240 with
a count of 0, and each link subtracts the divisor and counts one more (the count
is the quotient digit, the last value the remainder); after `:` comes the
quotient so far (the previous tally's times 10, plus this count).

`steps`, one worked example per op (digits least significant first for + - *):

    24 + 82 = 4+2=6+0=6 2+8=10+0=10#106.00
        one chain per column: a's digit + b's digit, then + the carry in
        (0 in the units); the digit is the last number's last digit, the carry
        its tens. The shorter operand is padded with 0s.
    19 - 52 = 1<5 12-9=3-0=3 15-1=14-1=13#-33.00
        first the comparison that decides the sign: the first digit pair, from
        the most significant, that differs (the units pair `=` if a == b). If
        a < b the columns compute b - a and the final answer is negative. Each
        column is 1x-y=e-borrow=t (x borrows 10 always): the digit is t's last
        digit, and the borrow out is 1 when t < 10.
    76 * 56 = 6*6=36 7*6=42 6*5=30 7*5=35 6+0=6 3+2=5+0=5+0=5 4+3=7+5=12+0=12 3+1=4#4256.00
        lattice multiplication: every digit product, b's digits outer, a's inner,
        each written with two digits (`1*7=07`); then one chain per place k from
        the units: the digits that fall in place k (each product's units digit
        in place i+j, its tens digit in place i+j+1, in the order the products
        were written) added up, then + the carry from place k-1. The digit of
        place k is the chain's last digit; the last place never carries.
    27 / 12 = 2q0:0 27q0-12=15q1-12=3q2:2 30q0-12=18q1-12=6q2:22 60q0-12=48q1-12=36q2-12=24q3-12=12q4-12=0q5:225 0q0:2250#2.25
        long division by repeated subtraction, most significant first: one
        tally per digit of a (the remainder so far * 10 + the next digit), then
        three decimal tallies (remainder * 10). Each subtracts the divisor
        while it can, counting: the last count is the quotient digit (never
        above 9, since the remainder is below the divisor), the last value the
        remainder, and the tally ends with the quotient so far. Every fact is
        a subtraction (a number minus the divisor), a count or a digit put on
        the end of the quotient, never a division: a division fact per
        dividend and divisor is a lookup table that a small model does not
        generalise (the first layout, `67/8=8r3` steps, left `/` at 26-44%).
        The quotient so far keeps the final answer local: without it a model
        must gather the quotient digits from tallies far back, and that
        gather was where a third to half of its wrong `/` answers first went
        wrong. The final answer is `round_quotient` of the last quotient
        (2250 thousandths) and whether the last remainder is 0.

`partial` (coarser steps, a study lever):

    76 * 56 = 76*6=456 76*50=3800+456=4256#4256.00
        one partial product per digit of b (a times the digit and its place),
        each after the first chained with the sum so far.
    67 / 8 = 67/8=8r3 30/8=3r6 60/8=7r4 40/8=5r0#8.38
        long division with one division fact per step: the whole integer
        part in one step (a / b with its remainder: the step a direct model
        finds hardest, as one fact), then the three decimal steps (remainder *
        10, divided); the final answer as for `steps`.
    + and -: as `steps` (their digit columns are already the coarsest steps
        that keep each fact single-digit).

`steps-msd` (a study lever: digit order): `steps` with the columns of + - and * written most
significant first, the same chains (so the same facts and the same length); `/` as `steps`
(long division already goes most significant first):

    24 + 82 = 2+8=10+0=10 4+2=6+0=6#106.00
        the tens column first: its carry in (0 here) comes from the units column, not yet written,
        so the model must work it out unseen; least significant first, it copies it.

`steps-lsd` (a study lever: digit order in long division): `steps` with every number of a tally
(its start, the divisor, each value left) written least significant digit first; the quotient so
far, and + - and * (least significant first already), as `steps`. The same facts and length:

    27 / 12 = 2q0:0 72q0-21=51q1-21=3q2:2 03q0-21=81q1-21=6q2:22 06q0-21=84q1-21=63q2-21=42q3-21=21q4-21=0q5:225 0q0:2250#2.25
        each subtraction's digits come units first, so each digit's borrow comes from the digit
        just written, as in `steps`' columns; written most significant first, a value's first
        digit waits on every borrow below it. A tally's start is the digit brought down, then the
        remainder as it was written (`03` is 30).

Length: mean characters per answer over the classic task (operands 0-99, the
final answer included; one token per character):

    steps     +  27.2   -  34.4   *  70.0   / 150.1
    partial   +  27.2   -  34.4   *  31.8   /  47.8
    steps-msd +  27.2   -  34.4   *  70.0   / 150.1
    steps-lsd +  27.2   -  34.4   *  70.0   / 150.1

Why lattice multiplication: a held-out operand (90-99) brings a 9 into a place
where training never had one. Position-free, every single-digit product is
trained (a 9 in the units place), but a layout that adds the carry to a whole
product (rows of `9*9=81+7=88`, then a digit sum) needs facts like 81+7 that
training never writes (81 only arises in the units, where the carry in is 0),
and covers 92% of held-out `*` problems. The lattice adds only digits: every
fact of every held-out `*` problem is trained (100%; coverage.py measures it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

from .formats import STEP_FORMATS, classic_result

MARK = "#"
DECIMALS = 3   # quotient digits after the point: enough to round to 2, with the remainder's zero test
KINDS = ("copy", "carry", "add", "sub", "mul", "sum", "compare", "count", "divide", "quotient", "shape", "final",
         "round", "unparsed")
"""Kinds of wrong step: a copied operand or product digit, a carry (its value or its add), a fact's
arithmetic, the sign's comparison, a tally's count, a division step (or a tally stopped early),
the quotient so far, the wrong number or shape of steps, the final answer (for /: its rounding),
or an answer that does not parse."""


# ---- the parsed form -------------------------------------------------------------------------

@dataclass(frozen=True)
class Link:
    """`op arg = out` applied to the chain's value so far. Numbers are kept as written."""
    op: str
    arg: str
    out: str


@dataclass(frozen=True)
class Chain:
    """`start op arg=out op arg=out ...`: one fact per link, each applied to the value so far."""
    start: str
    links: tuple[Link, ...]

    def text(self) -> str:
        return self.start + "".join(f"{k.op}{k.arg}={k.out}" for k in self.links)


@dataclass(frozen=True)
class Divide:
    """`dividend/divisor=quotient r remainder`: one long-division step."""
    dividend: str
    divisor: str
    quotient: str
    remainder: str

    def text(self) -> str:
        return f"{self.dividend}/{self.divisor}={self.quotient}r{self.remainder}"


@dataclass(frozen=True)
class Tally:
    """`start q0 -divisor=value q count ... : quotient`: subtract the divisor while it fits, counting,
    then the quotient so far."""
    start: str
    links: tuple[tuple[str, str, str], ...]  # (divisor, value, count) per subtraction
    quotient: str

    def text(self) -> str:
        return f"{self.start}q0" + "".join(f"-{v}={out}q{n}" for v, out, n in self.links) + f":{self.quotient}"


@dataclass(frozen=True)
class Compare:
    """`left rel right`: the digit pair that decides which operand is larger."""
    left: str
    rel: str
    right: str

    def text(self) -> str:
        return f"{self.left}{self.rel}{self.right}"


Step = Chain | Tally | Divide | Compare


@dataclass(frozen=True)
class Steps:
    """A parsed answer: its steps and its final answer, as written."""
    steps: tuple[Step, ...]
    final: str

    def text(self) -> str:
        return " ".join(s.text() for s in self.steps) + MARK + self.final


_NUM = r"\d{1,40}"  # bounded: int() refuses very long digit strings
_CHAIN = re.compile(rf"({_NUM})((?:[-+*]{_NUM}={_NUM})+)")
_LINK = re.compile(rf"([-+*])({_NUM})=({_NUM})")
_TALLY = re.compile(rf"({_NUM})q0((?:-{_NUM}={_NUM}q\d)*):({_NUM})")
_TALLY_LINK = re.compile(rf"-({_NUM})=({_NUM})q(\d)")
_DIVIDE = re.compile(rf"({_NUM})/({_NUM})=({_NUM})r({_NUM})")
_COMPARE = re.compile(r"(\d)([<>=])(\d)")
_FINAL = re.compile(rf"-?{_NUM}\.\d\d")


def _step(token: str) -> Step | None:
    if m := _CHAIN.fullmatch(token):
        return Chain(m.group(1), tuple(Link(*k) for k in _LINK.findall(m.group(2))))
    if m := _TALLY.fullmatch(token):
        return Tally(m.group(1), tuple(_TALLY_LINK.findall(m.group(2))), m.group(3))
    if m := _DIVIDE.fullmatch(token):
        return Divide(*m.groups())
    if m := _COMPARE.fullmatch(token):
        return Compare(*m.groups())
    return None


def parse(answer: str) -> Steps | None:
    """The steps and final answer of a steps answer, or None if it does not follow the grammar."""
    body, mark, final = answer.strip().rpartition(MARK)
    if not mark or not body or not _FINAL.fullmatch(final):
        return None
    steps: list[Step] = []
    for token in body.split(" "):
        step = _step(token)
        if step is None:
            return None
        steps.append(step)
    return Steps(tuple(steps), final)


def final_answer(answer: str) -> str | None:
    """The final (classic) answer of a well-formed steps answer, else None."""
    parsed = parse(answer)
    return parsed.final if parsed else None


def operands(prompt: str) -> tuple[int, str, int] | None:
    """(a, op, b) of an `a op b =` prompt, or None."""
    m = re.fullmatch(r"(\d{1,40}) ([-+*/]) (\d{1,40}) =", prompt.strip())
    return (int(m.group(1)), m.group(2), int(m.group(3))) if m else None


# ---- writing ---------------------------------------------------------------------------------

def _digits(n: int, width: int = 0) -> list[int]:
    """n's digits, least significant first, padded with 0s to `width`."""
    d = [int(c) for c in reversed(str(n))]
    return d + [0] * (width - len(d))


def _column(terms: list[int], carry: int) -> Chain:
    """Add the terms, then the carry: `t1+t2=s+c=total`."""
    total, links = terms[0], []
    for t in terms[1:] + [carry]:
        total += t
        links.append(Link("+", str(t), str(total)))
    return Chain(str(terms[0]), tuple(links))


def _chain_total(chain: Chain) -> int:
    return int(chain.links[-1].out)


def _write_add(a: int, b: int) -> list[Step]:
    n = max(len(str(a)), len(str(b)))
    steps: list[Step] = []
    carry = 0
    for x, y in zip(_digits(a, n), _digits(b, n)):
        steps.append(_column([x, y], carry))
        carry = _chain_total(steps[-1]) // 10
    return steps


def deciding_digits(a: int, b: int, n: int) -> tuple[str, str]:
    """The digit pair of a and b (zero-padded to n) that decides which is larger: the first pair, from
    the most significant, that differs (the units pair if a == b)."""
    sa, sb = str(a).zfill(n), str(b).zfill(n)
    k = next((i for i in range(n) if sa[i] != sb[i]), n - 1)
    return sa[k], sb[k]


def _write_sub(a: int, b: int) -> list[Step]:
    n = max(len(str(a)), len(str(b)))
    x, y = deciding_digits(a, b, n)
    steps: list[Step] = [Compare(x, "<" if a < b else ">" if a > b else "=", y)]
    top, low = (b, a) if a < b else (a, b)
    borrow = 0
    for x, y in zip(_digits(top, n), _digits(low, n)):
        e = 10 + x - y
        t = e - borrow
        steps.append(Chain(f"1{x}", (Link("-", str(y), str(e)), Link("-", str(borrow), str(t)))))
        borrow = int(t < 10)
    return steps


def _write_mul(a: int, b: int) -> list[Step]:
    da, db = _digits(a), _digits(b)
    steps: list[Step] = []
    places: list[list[int]] = [[] for _ in range(len(da) + len(db))]
    for j, y in enumerate(db):
        for i, x in enumerate(da):
            steps.append(Chain(str(x), (Link("*", str(y), f"{x * y:02d}"),)))
            places[i + j].append(x * y % 10)
            places[i + j + 1].append(x * y // 10)
    carry = 0
    for terms in places:
        steps.append(_column(terms, carry))
        carry = _chain_total(steps[-1]) // 10
    return steps


def _write_mul_partial(a: int, b: int) -> list[Step]:
    steps: list[Step] = []
    total = 0
    for j, y in enumerate(_digits(b)):
        m = y * 10 ** j
        links = [Link("*", str(m), str(a * m))]
        if j:
            links.append(Link("+", str(total), str(a * m + total)))
        total += a * m
        steps.append(Chain(str(a), tuple(links)))
    return steps


def _pieces(a: int, whole_first: bool) -> list[int]:
    """What long division brings down, in order: a's digits (or a whole), then a 0 per decimal."""
    return ([a] if whole_first else _digits(a)[::-1]) + [0] * DECIMALS


def _write_div(a: int, b: int) -> list[Step]:
    """Long division by repeated subtraction: one tally per piece brought down."""
    steps: list[Step] = []
    r = quotient = 0
    for piece in _pieces(a, whole_first=False):
        value, links = r * 10 + piece, []
        while value >= b:
            value -= b
            links.append((str(b), str(value), str(len(links) + 1)))
        quotient = quotient * 10 + len(links)
        steps.append(Tally(str(r * 10 + piece), tuple(links), str(quotient)))
        r = value
    return steps


def _write_div_partial(a: int, b: int) -> list[Step]:
    """Long division with one division fact per step, the whole of a first."""
    steps: list[Step] = []
    r = 0
    for piece in _pieces(a, whole_first=True):
        q, rem = divmod(r * 10 + piece, b)
        steps.append(Divide(str(r * 10 + piece), str(b), str(q), str(rem)))
        r = rem
    return steps


def _msd(steps: list[Step], op: str, a: int, b: int) -> list[Step]:
    """`steps-msd`'s order from `steps`' and back: the column chains reversed (+: every step; -:
    those after the comparison; *: those after the digit products), the rest in place; / unchanged."""
    if op == "/":
        return steps
    k = {"+": 0, "-": 1, "*": len(str(a)) * len(str(b))}[op]
    return steps[:k] + steps[k:][::-1]


def _lsd(steps: Iterable[Step]) -> list[Step]:
    """`steps-lsd`'s numbers from `steps`' and back (a reversal is its own inverse): each tally's
    start, divisor and values least significant digit first; the quotient so far, and the columns of
    + - and * (least significant first already), as `steps`."""
    return [Tally(s.start[::-1], tuple((d[::-1], v[::-1], n) for d, v, n in s.links), s.quotient)
            if isinstance(s, Tally) else s for s in steps]


def _arranged(steps: Iterable[Step], fmt: str, op: str, a: int, b: int) -> list[Step]:
    """`steps`' steps in `fmt`'s order and digit order, and back: each arrangement is its own inverse."""
    if fmt == "steps-msd":
        return _msd(list(steps), op, a, b)
    if fmt == "steps-lsd":
        return _lsd(steps)
    return list(steps)


def write(a: int, op: str, b: int, fmt: str = "steps") -> Steps:
    """The steps of `a op b` in format `fmt` (see STEP_FORMATS), ending in the classic answer."""
    if fmt not in STEP_FORMATS:
        raise ValueError(f"unknown steps format {fmt!r} (known: {', '.join(STEP_FORMATS)})")
    if a < 0 or b < 0:
        raise ValueError(f"steps formats need operands >= 0, got {a} {op} {b}")
    if op == "/" and b == 0:
        raise ValueError(f"division by zero: {a} / {b}")
    if op == "+":
        steps = _write_add(a, b)
    elif op == "-":
        steps = _write_sub(a, b)
    elif op == "*":
        steps = _write_mul_partial(a, b) if fmt == "partial" else _write_mul(a, b)
    elif op == "/":
        steps = _write_div_partial(a, b) if fmt == "partial" else _write_div(a, b)
    else:
        raise ValueError(f"unknown op {op!r} (known: + - * /)")
    return Steps(tuple(_arranged(steps, fmt, op, a, b)), classic_result(a, op, b))


def answer(a: int, op: str, b: int, fmt: str = "steps") -> str:
    """The answer text of `a op b` in format `fmt`."""
    return write(a, op, b, fmt).text()


# ---- rounding --------------------------------------------------------------------------------

def round_quotient(thousandths: int, exact: bool) -> str:
    """The classic answer f"{round(a / b, 2):.2f}" from what a long division wrote: its quotient
    to three decimals (`thousandths` = floor(1000 a / b), e.g. 8375 for 67 / 8) and whether the
    remainder after them is 0.

    Derivation. The true quotient q lies in [t, t + 1/1000) with t = thousandths / 1000, and
    round() rounds the exact value of the double nearest q. Unless the third decimal is 5 and the
    remainder 0, q is at least 1/(1000 b) from the half-cent t' = floor(100 q) / 100 + 0.005, far
    beyond the double's error (q * 2**-53, for any a below 9e12), so the third decimal rounds half
    up: 5-9 up (8.3751 -> 8.38), 0-4 down. When the third decimal is 5 and the remainder 0, q IS the
    half t: if t is a double (its fraction a multiple of 1/8: 0.125, 0.375, 0.625, 0.875), the tie
    goes to the even cent (1 / 8 = 0.12, 67 / 8 = 8.38); otherwise the double nearest t lies above or
    below it and decides (3 / 40 = 0.075 -> 0.07, 1 / 40 = 0.025 -> 0.03). That double is the one
    nearest `thousandths / 1000`, so the rule reads only the written digits.
    """
    cents, third = divmod(thousandths, 10)
    if third > 5 or (third == 5 and (not exact or _half_rounds_up(thousandths))):
        cents += 1
    return f"{cents // 100}.{cents % 100:02d}"


def _half_rounds_up(thousandths: int) -> bool:
    """Whether round(x, 2) rounds up the exact half x = thousandths / 1000 (third decimal 5)."""
    half = Fraction(thousandths, 1000)
    nearest = Fraction(thousandths / 1000)  # the double nearest x (int / int is correctly rounded)
    return nearest > half or (nearest == half and thousandths // 10 % 2 == 1)


# ---- checking --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """The verdict on one answer: its final answer as written and its first wrong step, if any.

    Steps are counted in reading order, one per fact (each link of a chain, each division, the
    comparison), the final answer last. Each fact is checked against the operands and the steps
    written before it, so a wrong carry is blamed once, where it was first written."""
    final: str                   # the final answer as written ("" when the answer does not parse)
    wrong_at: int | None = None  # index of the first wrong step (None: all right, or unparsed)
    wrong: str | None = None     # its kind (one of KINDS)

    @property
    def valid(self) -> bool:
        """Every step and the final answer follow from the operands."""
        return self.wrong is None

    @property
    def parsed(self) -> bool:
        return self.wrong != "unparsed"


Verdicts = Iterator[str | None]  # one per step: None if right, else the kind of the mistake


def _first(*checks: tuple[bool, str]) -> str | None:
    """The kind of the first failed check, or None."""
    return next((kind for ok, kind in checks if not ok), None)


def _digit(n: int, place: int) -> int:
    return n // 10 ** place % 10


def _chain(steps: list[Step], k: int, ops: str) -> Chain | None:
    """Step k if it is a chain whose links have these ops, else None (a shape mistake)."""
    step = steps[k] if k < len(steps) else None
    return step if isinstance(step, Chain) and "".join(link.op for link in step.links) == ops else None


def _sum_chain(chain: Chain, terms: list[int], carry: int) -> Verdicts:
    """A chain that adds `terms` in order, then `carry`."""
    left = int(chain.start)
    copied = left == terms[0]
    for m, link in enumerate(chain.links):
        arg, out = int(link.arg), int(link.out)
        if m < len(terms) - 1:
            yield _first((copied and arg == terms[m + 1], "copy"), (out == left + arg, "add"))
        else:
            yield _first((copied, "copy"), (arg == carry and out == left + arg, "carry"))
        copied, left = True, out


def _columns(steps: list[Step], places: list[list[int]], final: str) -> Verdicts:
    """One adding chain per place, least significant first, then the final answer they spell."""
    carry = value = 0
    for k, terms in enumerate(places):
        step = _chain(steps, k, "+" * len(terms))
        if step is None:
            yield "shape"
            return
        yield from _sum_chain(step, terms, carry)
        total = int(step.links[-1].out)
        value += total % 10 * 10 ** k
        carry = total // 10
    if len(steps) != len(places):
        yield "shape"
        return
    yield None if final == f"{value + carry * 10 ** len(places)}.00" else "final"


def _check_add(parsed: Steps, a: int, b: int) -> Verdicts:
    n = max(len(str(a)), len(str(b)))
    yield from _columns(list(parsed.steps), [[_digit(a, k), _digit(b, k)] for k in range(n)], parsed.final)


def _check_sub(parsed: Steps, a: int, b: int) -> Verdicts:
    steps = list(parsed.steps)
    n = max(len(str(a)), len(str(b)))
    cmp = steps[0]
    if not isinstance(cmp, Compare):
        yield "shape"
        return
    place = max((k for k in range(n) if _digit(a, k) != _digit(b, k)), default=0)
    x, y = int(cmp.left), int(cmp.right)
    yield _first((x == _digit(a, place) and y == _digit(b, place), "copy"),
                 (cmp.rel == "<=>"[(x > y) - (x < y) + 1], "compare"))
    negative = cmp.rel == "<"
    top, low = (b, a) if negative else (a, b)
    borrow = value = 0
    for k in range(n):
        step = _chain(steps, k + 1, "--")
        if step is None:
            yield "shape"
            return
        start, (sub, back) = int(step.start), step.links
        yield _first((start == 10 + _digit(top, k) and int(sub.arg) == _digit(low, k), "copy"),
                     (int(sub.out) == start - int(sub.arg), "sub"))
        t = int(back.out)
        yield _first((int(back.arg) == borrow and t == int(sub.out) - borrow, "carry"))
        value += t % 10 * 10 ** k
        borrow = int(t < 10)
    if len(steps) != n + 1:
        yield "shape"
        return
    yield None if parsed.final == f"{-value if negative else value}.00" else "final"


def _check_mul(parsed: Steps, a: int, b: int) -> Verdicts:
    steps = list(parsed.steps)
    na, nb = len(str(a)), len(str(b))
    places: list[list[int]] = [[] for _ in range(na + nb)]
    for j in range(nb):
        for i in range(na):
            step = _chain(steps, j * na + i, "*")
            if step is None:
                yield "shape"
                return
            x, y, p = int(step.start), int(step.links[0].arg), int(step.links[0].out)
            yield _first((x == _digit(a, i) and y == _digit(b, j), "copy"), (p == x * y, "mul"))
            places[i + j].append(p % 10)
            places[i + j + 1].append(p // 10 % 10)
    yield from _columns(steps[na * nb:], places, parsed.final)


def _check_mul_partial(parsed: Steps, a: int, b: int) -> Verdicts:
    steps = list(parsed.steps)
    total = 0
    for j in range(len(str(b))):
        step = _chain(steps, j, "*+" if j else "*")
        if step is None:
            yield "shape"
            return
        x, m, p = int(step.start), int(step.links[0].arg), int(step.links[0].out)
        yield _first((x == a and m == _digit(b, j) * 10 ** j, "copy"), (p == x * m, "mul"))
        if j:
            arg, out = int(step.links[1].arg), int(step.links[1].out)
            yield _first((arg == total, "copy"), (out == p + arg, "sum"))
            p = out
        total = p
    if len(steps) != len(str(b)):
        yield "shape"
        return
    yield None if parsed.final == f"{total}.00" else "final"


def _check_div(parsed: Steps, a: int, b: int) -> Verdicts:
    """One verdict per tally's start, per subtraction, per tally's stop (the value left is below
    the divisor) and per quotient so far, then the final answer."""
    steps = list(parsed.steps)
    pieces = _pieces(a, whole_first=False)
    r = quotient = 0
    for k, piece in enumerate(pieces):
        step = steps[k] if k < len(steps) else None
        if not isinstance(step, Tally):
            yield "shape"
            return
        value = int(step.start)
        yield None if value == r * 10 + piece else "copy"
        for n, (divisor, out, count) in enumerate(step.links, 1):
            yield _first((int(divisor) == b, "copy"), (value >= b and int(out) == value - b, "sub"),
                         (int(count) == n, "count"))
            value = int(out)
        yield None if value < b else "divide"
        r, quotient = value, quotient * 10 + len(step.links)
        yield None if int(step.quotient) == quotient else "quotient"
    if len(steps) != len(pieces):
        yield "shape"
        return
    yield None if parsed.final == round_quotient(quotient, r == 0) else "round"


def _check_div_partial(parsed: Steps, a: int, b: int) -> Verdicts:
    steps = list(parsed.steps)
    pieces = _pieces(a, whole_first=True)
    r = quotient = 0
    for k, piece in enumerate(pieces):
        step = steps[k] if k < len(steps) else None
        if not isinstance(step, Divide):
            yield "shape"
            return
        d, v, q, rem = int(step.dividend), int(step.divisor), int(step.quotient), int(step.remainder)
        yield _first((d == r * 10 + piece and v == b, "copy"), (q * v + rem == d and rem < v, "divide"))
        r, quotient = rem, quotient * 10 + q
    if len(steps) != len(pieces):
        yield "shape"
        return
    yield None if parsed.final == round_quotient(quotient, r == 0) else "round"


def _verdicts(parsed: Steps, a: int, op: str, b: int, fmt: str) -> Verdicts:
    """Verdicts in `steps`' order and digit order: a `steps-msd` answer's columns are put back least
    significant first, so its first wrong step is the first in that order; a `steps-lsd` answer's
    tally numbers are read back most significant first."""
    parsed = Steps(tuple(_arranged(parsed.steps, fmt, op, a, b)), parsed.final)
    if op == "+":
        return _check_add(parsed, a, b)
    if op == "-":
        return _check_sub(parsed, a, b)
    if op == "*":
        return _check_mul_partial(parsed, a, b) if fmt == "partial" else _check_mul(parsed, a, b)
    if op == "/":
        return _check_div_partial(parsed, a, b) if fmt == "partial" else _check_div(parsed, a, b)
    raise ValueError(f"unknown op {op!r} (known: + - * /)")


def check(answer: str, a: int, op: str, b: int, fmt: str = "steps") -> Check:
    """Recompute every step of `answer` to `a op b` in format `fmt`; never raises on a bad answer."""
    parsed = parse(answer)
    if parsed is None:
        return Check("", None, "unparsed")
    for index, kind in enumerate(_verdicts(parsed, a, op, b, fmt)):
        if kind is not None:
            return Check(parsed.final, index, kind)
    return Check(parsed.final)


# ---- facts -----------------------------------------------------------------------------------

Fact = tuple[int | str, ...]  # (left, op, right, result[, remainder]) or (left, relation, right)


def facts(answer: str, fmt: str = "steps") -> set[Fact]:
    """The facts an answer in steps format `fmt` states, whatever their place: each chain link as
    (value so far, op, argument, result), each tally's subtraction as (value, "-", divisor, result)
    and its stop as (value left, "<", divisor), each division as (dividend, "/", divisor, quotient,
    remainder), a comparison as (left, relation, right)."""
    parsed = parse(answer)
    if parsed is None:
        raise ValueError(f"not a steps answer: {answer!r}")
    out: set[Fact] = set()
    for step in _lsd(parsed.steps) if fmt == "steps-lsd" else parsed.steps:
        if isinstance(step, Chain):
            left = int(step.start)
            for k in step.links:
                out.add((left, k.op, int(k.arg), int(k.out)))
                left = int(k.out)
        elif isinstance(step, Tally):
            value = int(step.start)
            for divisor, result, _ in step.links:
                out.add((value, "-", int(divisor), int(result)))
                value = int(result)
            if step.links:  # a tally with no subtraction compares with the prompt's divisor, not written here
                out.add((value, "<", int(step.links[0][0])))
        elif isinstance(step, Divide):
            out.add((int(step.dividend), "/", int(step.divisor), int(step.quotient), int(step.remainder)))
        else:
            out.add((int(step.left), step.rel, int(step.right)))
    return out

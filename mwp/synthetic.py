"""Embedded data: Chinese primary-school word problems in the Ape210K format, generated from templates.

Fifteen families (chickens and rabbits, surplus/deficit, ages, tree planting, cows eating grass,
profit and discount, percentages, fractions, travel/meeting, chasing, work rate, averages,
area/perimeter, shopping), each with several phrasings. A generator draws the hidden quantities first
(e.g. the numbers of chickens and rabbits), derives the givens, and writes the record
`{"id", "segmented_text", "original_text", "ans", "equation"}`; every record is checked by
`mwp.expressions.normalize_problem` (its equation evaluated with `safe_eval` must equal the answer).

Splits hold out both number ranges and phrasings: train draws every free quantity from the lower part
of its range and uses all phrasings but the last of each family; valid and test draw from the upper,
disjoint part of the range and use the held-out phrasing for half of their problems, so accuracy
measures generalisation, not recall.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from fractions import Fraction

from mwp.expressions import normalize_problem

TRAIN_FRACTION = 0.7  # train numbers come from the lower 70% of each range, valid/test from the rest


class _Numbers:
    """Draws integers from the train or the held-out part of a nominal range [lo, hi]."""

    def __init__(self, rng: random.Random, held_out: bool):
        self.rng, self.held_out = rng, held_out

    def __call__(self, lo: int, hi: int) -> int:
        cut = lo + int((hi - lo) * TRAIN_FRACTION)
        return self.rng.randint(cut + 1, hi) if self.held_out else self.rng.randint(lo, cut)

    def choice(self, seq):
        return self.rng.choice(seq)


def _fmt(value: Fraction) -> str:
    """Formats an answer the way Ape210K does: "12", "(3/4)" or "2.5"."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    if 10**6 % value.denominator == 0 and value.denominator in (2, 4, 5, 8, 10, 20, 25, 50, 100):
        return f"{float(value):g}"
    return f"({value.numerator}/{value.denominator})"


# Each family: (generator(n) -> (slots dict, answer Fraction), [(question template, equation template)]).
# The last template of each family is the held-out phrasing.

def _chickens_rabbits(n):
    c, r = n(3, 40), n(3, 40)
    ask = n.choice(["兔", "鸡"])
    return {"h": c + r, "l": 2 * c + 4 * r, "ask": ask}, Fraction(r if ask == "兔" else c)


def _cr_eq(s):
    return "x=({l}-2*{h})/(4-2)" if s["ask"] == "兔" else "x=(4*{h}-{l})/(4-2)"


_FAMILIES: dict[str, tuple[Callable, list[tuple[str, Callable | str]]]] = {}


def _family(name, gen, templates):
    _FAMILIES[name] = (gen, templates)


_family("chickens_rabbits", _chickens_rabbits, [
    ("鸡兔同笼，共有{h}个头，{l}只脚，{ask}有多少只？", _cr_eq),
    ("笼子里有若干只鸡和兔，从上面数有{h}个头，从下面数有{l}只脚，{ask}有几只？", _cr_eq),
    ("鸡和兔一共{h}只，它们的脚一共有{l}只，问{ask}有多少只？", _cr_eq),
    ("一个笼子里关着鸡和兔，一共{l}只脚、{h}个头，那么{ask}一共有多少只？", _cr_eq),
])


def _surplus(n):
    a, d = n(2, 9), n(1, 5)
    people = n(4, 40)
    s, deficit = n(1, 30), None
    b = a + d
    deficit = b * people - (a * people + s)
    if deficit <= 0:
        s = n(1, 3)
        deficit = b * people - (a * people + s)
    return {"a": a, "b": b, "s": s, "d": deficit}, Fraction(people)


_family("surplus_deficit", _surplus, [
    ("老师给小朋友分苹果，每人分{a}个，多{s}个；每人分{b}个，少{d}个。有多少个小朋友？", "x=({s}+{d})/({b}-{a})"),
    ("把一些练习本分给学生，如果每人{a}本，还剩{s}本；如果每人{b}本，就缺{d}本。学生有多少人？", "x=({s}+{d})/({b}-{a})"),
    ("一些糖分给同学，每人{a}块则多出{s}块，每人{b}块则差{d}块，同学有几人？", "x=({s}+{d})/({b}-{a})"),
    ("每人发{b}支铅笔就少{d}支，每人发{a}支铅笔就多{s}支，一共有多少人？", "x=({s}+{d})/({b}-{a})"),
])


def _ages(n):
    son, k, years = n(3, 15), n(2, 5), n(1, 12)
    father = k * (son + years) - years
    return {"f": father, "s": son, "k": k}, Fraction(years)


_family("ages", _ages, [
    ("今年爸爸{f}岁，儿子{s}岁，几年后爸爸的年龄是儿子的{k}倍？", "x=({f}-{k}*{s})/({k}-1)"),
    ("妈妈今年{f}岁，女儿今年{s}岁，再过多少年妈妈的年龄是女儿的{k}倍？", "x=({f}-{k}*{s})/({k}-1)"),
    ("爷爷{f}岁，孙子{s}岁，经过几年爷爷的岁数正好是孙子的{k}倍？", "x=({f}-{k}*{s})/({k}-1)"),
    ("儿子今年{s}岁，父亲今年{f}岁，多少年以后父亲的年龄是儿子年龄的{k}倍？", "x=({f}-{k}*{s})/({k}-1)"),
])


def _trees(n):
    d, k = n(2, 10), n(5, 60)
    mode = n.choice([0, 1, 2])
    return {"L": d * k, "d": d, "mode": mode}, Fraction(k + 1 - mode)


def _tree_eq(s):
    return ["x={L}/{d}+1", "x={L}/{d}", "x={L}/{d}-1"][s["mode"]]


_ENDS = ["两端都种", "只在一端种", "两端都不种"]
_family("tree_planting", _trees, [
    ("一条路长{L}米，每隔{d}米种一棵树，{ends}，一共要种多少棵树？", _tree_eq),
    ("在一条长{L}米的小路一边植树，{ends}，相邻两棵树相距{d}米，需要多少棵树苗？", _tree_eq),
    ("公园小路全长{L}米，沿路一侧每{d}米栽一棵树，{ends}，共栽树多少棵？", _tree_eq),
    ("沿着{L}米长的河边一侧植树，{ends}，每两棵树之间的距离是{d}米，可以种几棵？", _tree_eq),
])


def _grass(n):
    g, t1, dt, m = n(1, 9), n(2, 8), n(1, 6), n(1, 3)
    t2 = t1 + dt
    grass = m * t1 * t2  # initial grass, in cow-days: (a - g) * t1 = (b - g) * t2
    return {"a": g + grass // t1, "t1": t1, "b": g + grass // t2, "t2": t2}, Fraction(g)


_family("cows_grass", _grass, [
    ("一片草地，{a}头牛{t1}天可以吃完，{b}头牛{t2}天可以吃完，每天新长的草可供几头牛吃一天？", "x=({b}*{t2}-{a}*{t1})/({t2}-{t1})"),
    ("牧场上的草匀速生长，可供{a}头牛吃{t1}天，或供{b}头牛吃{t2}天，草每天生长的量够几头牛吃一天？", "x=({b}*{t2}-{a}*{t1})/({t2}-{t1})"),
    ("有一块草地，草每天都在均匀生长，如果放{a}头牛，{t1}天吃完；放{b}头牛，{t2}天吃完。每天长出的草够多少头牛吃一天？", "x=({b}*{t2}-{a}*{t1})/({t2}-{t1})"),
    ("{b}头牛{t2}天能吃完一片草地的草，{a}头牛{t1}天能吃完，这片草地每天新长的草够几头牛吃一天？", "x=({b}*{t2}-{a}*{t1})/({t2}-{t1})"),
])


def _discount(n):
    price, k = 10 * n(2, 90), n(5, 9)
    return {"p": price, "k": k}, Fraction(price * k, 10)


_family("discount", _discount, [
    ("一件衣服原价{p}元，现在打{k}折出售，现价多少元？", "x={p}*{k}/10"),
    ("商店里一台电扇标价{p}元，按{k}折销售，售价是多少元？", "x={p}*{k}/10"),
    ("一双鞋原来卖{p}元，节日期间打{k}折，现在要多少元？", "x={p}*{k}/10"),
    ("打{k}折后，原价{p}元的书包现在卖多少元？", "x={p}*{k}/10"),
])


def _profit(n):
    cost, pct = 20 * n(1, 40), 5 * n(1, 12)
    return {"c": cost, "r": pct}, Fraction(cost * (100 + pct), 100)


_family("profit", _profit, [
    ("一件商品进价{c}元，按{r}%的利润定价，定价是多少元？", "x={c}*(1+{r}%)"),
    ("某商品成本{c}元，商店想赚{r}%，应该卖多少元？", "x={c}*(1+{r}%)"),
    ("商店以{c}元购进一批玩具，加价{r}%出售，每件玩具售价多少元？", "x={c}*(1+{r}%)"),
    ("按成本加{r}%定价，成本为{c}元的台灯定价是多少元？", "x={c}*(1+{r}%)"),
])


def _percent(n):
    b, p = 20 * n(1, 30), 5 * n(1, 19)
    return {"b": b, "p": p}, Fraction(b * p, 100)


_family("percentage", _percent, [
    ("学校有学生{b}人，其中{p}%是女生，女生有多少人？", "x={b}*{p}%"),
    ("一本书{b}页，已经看了{p}%，看了多少页？", "x={b}*{p}%"),
    ("果园有果树{b}棵，苹果树占{p}%，苹果树有多少棵？", "x={b}*{p}%"),
    ("{b}的{p}%是多少？", "x={b}*{p}%"),
])


def _fraction(n):
    den = n(2, 9)
    num = n(1, den - 1) if den > 2 else 1
    while Fraction(num, den).denominator != den:
        num = 1
    whole = den * n(2, 30)
    ask = n.choice([0, 1])
    ans = Fraction(whole * num, den) if ask == 0 else Fraction(whole)
    return {"w": whole if ask == 0 else whole * num // den, "m": num, "d": den, "ask": ask}, ans


def _frac_eq(s):
    return "x={w}*{m}/{d}" if s["ask"] == 0 else "x={w}/({m}/{d})"


_family("fraction", _fraction, [
    ("{qa}", _frac_eq), ("{qb}", _frac_eq), ("{qc}", _frac_eq), ("{qd}", _frac_eq),
])
_FRACTION_TEXT = [
    ("一根绳子长{w}米，用去了它的{m}/{d}，用去了多少米？", "一根绳子用去了{m}/{d}，正好是{w}米，这根绳子长多少米？"),
    ("一桶油{w}千克，吃了{m}/{d}，吃了多少千克？", "一桶油吃了{m}/{d}，吃了{w}千克，这桶油原有多少千克？"),
    ("班里有{w}人，{m}/{d}参加了合唱队，参加合唱队的有几人？", "班里{m}/{d}的同学参加合唱队，共{w}人，全班有几人？"),
    ("{w}的{m}/{d}是多少？", "一个数的{m}/{d}是{w}，这个数是多少？"),
]


def _travel(n):
    v1, v2, t = n(20, 90), n(20, 90), n(2, 9)
    return {"D": (v1 + v2) * t, "v1": v1, "v2": v2}, Fraction(t)


_family("meeting", _travel, [
    ("甲乙两地相距{D}千米，两辆车同时从两地相对开出，一辆每小时行{v1}千米，另一辆每小时行{v2}千米，几小时后相遇？", "x={D}/({v1}+{v2})"),
    ("两城相距{D}千米，客车每小时{v1}千米，货车每小时{v2}千米，两车同时相向而行，经过多少小时相遇？", "x={D}/({v1}+{v2})"),
    ("小明和小红从相距{D}米的两处同时相向走，小明每分走{v1}米，小红每分走{v2}米，多少分钟后两人相遇？", "x={D}/({v1}+{v2})"),
    ("A、B两地间的路程是{D}千米，快车速度{v1}千米/时，慢车速度{v2}千米/时，两车同时从两地对开，几小时相遇？", "x={D}/({v1}+{v2})"),
])


def _chase(n):
    v2, dv, t = n(10, 60), n(2, 20), n(2, 12)
    return {"g": dv * t, "v1": v2 + dv, "v2": v2}, Fraction(t)


_family("chasing", _chase, [
    ("小狗在小猫后面{g}米，小狗每秒跑{v1}米，小猫每秒跑{v2}米，小狗几秒追上小猫？", "x={g}/({v1}-{v2})"),
    ("甲在乙前面{g}千米，乙每小时行{v1}千米，甲每小时行{v2}千米，乙几小时能追上甲？", "x={g}/({v1}-{v2})"),
    ("一辆汽车每小时行{v1}千米，在它前方{g}千米处有一辆每小时行{v2}千米的拖拉机，汽车多少小时追上拖拉机？", "x={g}/({v1}-{v2})"),
    ("快车每小时{v1}千米，慢车每小时{v2}千米，慢车先在快车前方{g}千米，快车追上慢车要几小时？", "x={g}/({v1}-{v2})"),
])


def _work(n):
    a, b = n(2, 30), n(2, 30)
    return {"a": a, "b": b}, 1 / (Fraction(1, a) + Fraction(1, b))


_family("work_rate", _work, [
    ("一项工程，甲队单独做{a}天完成，乙队单独做{b}天完成，两队合做几天完成？", "x=1/(1/{a}+1/{b})"),
    ("一批零件，师傅单独做要{a}小时，徒弟单独做要{b}小时，两人合作要多少小时？", "x=1/(1/{a}+1/{b})"),
    ("一个水池，单开甲管{a}分钟注满，单开乙管{b}分钟注满，两管齐开几分钟注满？", "x=1/(1/{a}+1/{b})"),
    ("修一条路，乙队单独修{b}天修完，甲队单独修{a}天修完，两队合修多少天修完？", "x=1/(1/{a}+1/{b})"),
])


def _average(n):
    k, avg = n(2, 6), n(60, 95)
    last = n(60, 100)
    total = avg * k + last
    return {"k": k, "a": avg, "b": last, "k1": k + 1}, Fraction(total, k + 1)


_family("average", _average, [
    ("小明前{k}次数学测验的平均分是{a}分，第{k1}次考了{b}分，这{k1}次的平均分是多少？", "x=({a}*{k}+{b})/{k1}"),
    ("一个组前{k}人的平均身高是{a}厘米，又来了一位身高{b}厘米的同学，现在的平均身高是多少厘米？", "x=({a}*{k}+{b})/({k}+1)"),
    ("某工人前{k}天平均每天做{a}个零件，第{k1}天做了{b}个，这{k1}天平均每天做几个？", "x=({a}*{k}+{b})/{k1}"),
    ("前{k}场比赛平均每场得{a}分，后来一场得了{b}分，这{k1}场平均每场得多少分？", "x=({a}*{k}+{b})/{k1}"),
])


def _area(n):
    l, w = n(3, 60), n(2, 40)
    kind = n.choice(["面积", "周长"])
    return {"l": l, "w": w, "kind": kind}, Fraction(l * w if kind == "面积" else 2 * (l + w))


def _area_eq(s):
    return "x={l}*{w}" if s["kind"] == "面积" else "x=({l}+{w})*2"


_family("rectangle", _area, [
    ("一个长方形长{l}厘米，宽{w}厘米，它的{kind}是多少？", _area_eq),
    ("一块长方形菜地，长{l}米，宽{w}米，这块地的{kind}是多少？", _area_eq),
    ("长方形花坛的长是{l}米，宽是{w}米，求花坛的{kind}。", _area_eq),
    ("宽{w}分米、长{l}分米的长方形木板，{kind}是多少？", _area_eq),
])


def _shopping(n):
    k, p = n(2, 9), n(2, 30)
    paid = 10 * ((k * p) // 10 + n(1, 10))
    return {"k": k, "p": p, "m": paid}, Fraction(paid - k * p)


_family("shopping", _shopping, [
    ("妈妈买了{k}千克苹果，每千克{p}元，付了{m}元，应找回多少元？", "x={m}-{k}*{p}"),
    ("小华带了{m}元，买了{k}本练习本，每本{p}元，还剩多少元？", "x={m}-{k}*{p}"),
    ("一支钢笔{p}元，买{k}支，给售货员{m}元，找回多少元？", "x={m}-{k}*{p}"),
    ("用{m}元钱买单价{p}元的文具{k}件，还剩几元？", "x={m}-{k}*{p}"),
])

FAMILIES = tuple(_FAMILIES)


def _render(family: str, template_index: int, slots: dict) -> tuple[str, str]:
    question, equation = _FAMILIES[family][1][template_index]
    slots = dict(slots)
    if family == "tree_planting":
        slots["ends"] = _ENDS[slots["mode"]]
    if family == "fraction":
        q = _FRACTION_TEXT[template_index][slots["ask"]]
        question = q
    equation = equation(slots) if callable(equation) else equation
    return question.format(**slots), equation.format(**slots)


def generate_problem(rng: random.Random, family: str, template_index: int, held_out_numbers: bool,
                     problem_id: str = "0") -> dict:
    """One Ape210K-format record of `family` in phrasing `template_index`, checked by `normalize_problem`.

    Besides the five Ape210K fields the record carries `family`, `phrasing` and `held_out_phrasing`.
    """
    gen = _FAMILIES[family][0]
    numbers = _Numbers(rng, held_out_numbers)
    for _ in range(100):
        slots, answer = gen(numbers)
        if answer > 0 and all(v > 0 for v in slots.values() if isinstance(v, int)):
            break
    else:  # pragma: no cover - generators always succeed within a few tries
        raise RuntimeError(f"family {family} failed to draw valid numbers")
    text, equation = _render(family, template_index, slots)
    record = {"id": problem_id, "segmented_text": " ".join(text), "original_text": text,
              "ans": _fmt(answer), "equation": equation, "family": family, "phrasing": template_index,
              "held_out_phrasing": template_index == len(_FAMILIES[family][1]) - 1}
    normalize_problem(record)  # raises ExpressionError if the gold equation does not give the answer
    return record


def generate_split(split: str, num_problems: int, seed: int = 0) -> list[dict]:
    """Problems for `split` in {"train", "valid", "test"} (raw Ape210K records, equation "x=...").

    train: numbers from the lower 70% of each range, phrasings 0..T-2 of every family.
    valid/test: numbers from the upper 30%; half of the problems use the held-out phrasing T-1.
    Questions of valid/test that also occur in train are impossible (disjoint number ranges).
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    if num_problems < 0:
        raise ValueError(f"num_problems must be >= 0, got {num_problems}")
    rng = random.Random(f"{split}-{seed}")
    records = []
    for i in range(num_problems):
        family = FAMILIES[i % len(FAMILIES)]
        n_templates = len(_FAMILIES[family][1])
        if split == "train":
            t = rng.randrange(n_templates - 1)
        else:
            t = n_templates - 1 if rng.random() < 0.5 else rng.randrange(n_templates - 1)
        records.append(generate_problem(rng, family, t, split != "train", f"{split}-{i}"))
    return records



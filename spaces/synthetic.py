"""Embedded data: long synthetic civil judgments with reworded reference summaries (CAIL2020-like).

Each document (40-150 clauses) has a header, the parties (names, birth dates, addresses, lawyers),
procedural boilerplate, the claims, the facts (dates, amounts, interest rates), filler evidence and
procedure clauses drawn from a pool, the court's reasoning, the judgment and the appeal notice. Three
case types (private loan, sales contract, traffic accident) with their own templates.

The reference summary follows the real CAIL2020 summaries' shape (claims -> defence -> court's view ->
judgment) and reuses the key clauses with light rewording ("本院认为" -> "法院认为", "判决如下" -> "判决",
claims introduced with "原告诉称", some sub-clauses dropped or merged), so the extraction oracle is well
below 1, extraction alone is not enough, and exact copying of names, dates and amounts matters.
Everything is drawn from `random.Random(seed)`: the same seed gives the same documents.
"""

from __future__ import annotations

import random

from spaces.data import Document, split_clauses

__all__ = ["synthetic_documents", "synthetic_document"]

_SURNAMES = "张王李赵刘陈杨黄周吴徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程魏苏吕丁任沈姚"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰飞红鹏辉建国志文海波斌宇浩凯健俊帆帅旭宁龙林欣"
_PLACES = ["江苏省南京市", "浙江省杭州市", "广东省佛山市", "湖南省长沙市", "四川省成都市", "河南省郑州市",
           "山东省临沂市", "福建省泉州市", "安徽省合肥市", "湖北省襄阳市"]
_DISTRICTS = ["东城", "西城", "南湖", "北塘", "新华", "鼓楼", "江宁", "高新", "金山", "城关"]
_COMPANY = ["科技", "贸易", "建材", "物流", "食品", "电子", "机械", "服装"]
_GOODS = ["钢材", "水泥", "电缆", "木材", "布料", "饲料", "瓷砖", "茶叶"]
_REASONS = ["资金周转", "经营需要", "购房", "装修房屋", "生意周转", "偿还债务"]
_CN_NUM = "一二三四五六七八九十"

_FILLER = [
    "上述证据经当庭质证", "原告对被告提交的证据的真实性无异议", "但对其证明目的有异议",
    "对当事人无异议的证据", "本院予以确认并在卷佐证", "本院组织当事人进行了证据交换和质证",
    "根据当事人陈述和经审查确认的证据", "本院认定事实如下", "双方当事人均确认上述事实",
    "被告未提交证据", "视为其放弃举证和质证的权利", "原告为证明其主张", "向本院提交了以下证据",
    "证人出庭作证", "证人证言与其他证据能够相互印证", "本院依法调取了相关材料",
    "庭审中", "双方均表示不同意调解", "本案经调解未能达成一致意见", "原告申请财产保全",
    "本院依法作出了财产保全裁定", "被告对此未提出异议", "经审查", "上述事实有当事人陈述在案佐证",
    "本院依法组成合议庭", "适用普通程序", "原告当庭变更了诉讼请求", "被告对上述事实予以认可",
    "另查明", "双方曾多次协商", "但未能达成一致", "原告曾通过电话方式向被告催要",
    "被告承诺近期归还", "后被告一直未履行", "本院依法向被告公告送达了起诉状副本",
    "公告期满后被告未到庭", "本院依法缺席审理", "以上事实", "有原告提交的证据及庭审笔录在卷为证",
]


def _name(r: random.Random) -> str:
    return r.choice(_SURNAMES) + "".join(r.choice(_GIVEN) for _ in range(r.choice((1, 2))))


def _date(r: random.Random, year_lo: int = 2012, year_hi: int = 2019) -> str:
    return f"{r.randint(year_lo, year_hi)}年{r.randint(1, 12)}月{r.randint(1, 28)}日"


def _amount(r: random.Random) -> str:
    return str(r.choice((r.randint(2, 99) * 1000, r.randint(10, 999) * 100, r.randint(1000, 99999))))


def _person(r: random.Random, role: str, name: str) -> list[str]:
    sex = r.choice("男女")
    place = r.choice(_PLACES)
    return [f"{role}：{name}，", f"{sex}，", f"{_date(r, 1955, 1995)}出生，", "汉族，",
            f"住{place}{r.choice(_DISTRICTS)}区{r.randint(1, 300)}号。"]


def _clauses_to_sentences(clauses: list[str]) -> list[str]:
    """Groups clauses into sentences (a sentence ends after 。 or a newline-like break)."""
    out, cur = [], ""
    for c in clauses:
        cur += c
        if c.endswith(("。", "：")):
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def synthetic_document(r: random.Random, doc_id: str, min_clauses: int = 40, max_clauses: int = 150,
                       summary_style: str = "full") -> Document:
    """One synthetic judgment with its summary; see the module docstring.

    summary_style "full" (~190 characters: claims, facts, defence, court's view, law, judgment) or
    "short" (~70 characters: claim, court's view, judgment; for CPU-minute generator training).
    """
    if summary_style not in ("full", "short"):
        raise ValueError(f"summary_style must be 'full' or 'short', got {summary_style!r}")
    kind = r.choice(("loan", "sale", "traffic"))
    p, d, lawyer, judge = _name(r), _name(r), _name(r), _name(r)
    city = r.choice(_PLACES)
    court = f"{city}{r.choice(_DISTRICTS)}区人民法院"
    amt, fee, date1, date2 = _amount(r), str(r.randint(50, 5000)), _date(r), _date(r)
    rate = r.choice(("1", "1.5", "2", "0.5"))
    if kind == "loan":
        case = "民间借贷纠纷"
        reason = r.choice(_REASONS)
        claim = [f"判令被告偿还借款{amt}元及利息；", "本案诉讼费用由被告承担。"]
        facts = [f"{date1}，", f"被告因{reason}向原告借款{amt}元，", f"约定月利率{rate}%，",
                 f"于{date2}前归还。", "借款到期后，", "经原告多次催要，", "被告至今未还。"]
        view = ["合法的借贷关系受法律保护。", f"被告向原告借款{amt}元，", "有借条为证，", "事实清楚，",
                "证据充分，", "本院予以确认。", "被告未按约定归还借款，", "应承担还款责任。"]
        law = "《中华人民共和国合同法》第二百零六条"
        order = f"被告{d}于本判决生效之日起十日内偿还原告{p}借款{amt}元"
        s_facts = f"{date1}，被告向原告借款{amt}元，约定月利率{rate}%，借款到期后被告未还。"
        s_view = f"被告向原告借款{amt}元，事实清楚，被告应承担还款责任。"
    elif kind == "sale":
        case = "买卖合同纠纷"
        goods = r.choice(_GOODS)
        d = d[0] + r.choice(_GIVEN) + r.choice(_COMPANY) + "有限公司"
        claim = [f"判令被告支付货款{amt}元及逾期付款利息；", "本案诉讼费用由被告承担。"]
        facts = [f"{date1}，", f"原告与被告签订{goods}买卖合同，", f"约定被告向原告购买{goods}，",
                 f"货款共计{amt}元。", "原告依约交付了货物，", "被告收货后，", "未支付货款。"]
        view = ["原告与被告之间的买卖合同合法有效。", "原告已依约交付货物，", f"被告应支付货款{amt}元。",
                "被告逾期付款，", "应承担违约责任。"]
        law = "《中华人民共和国合同法》第一百零九条"
        order = f"被告{d}于本判决生效之日起十日内支付原告{p}货款{amt}元"
        s_facts = f"{date1}，原告与被告签订{goods}买卖合同，货款共计{amt}元，被告收货后未支付货款。"
        s_view = f"原告已交付货物，被告应支付货款{amt}元。"
    else:
        case = "机动车交通事故责任纠纷"
        claim = [f"判令被告赔偿原告各项损失共计{amt}元；", "本案诉讼费用由被告承担。"]
        facts = [f"{date1}，", "被告驾驶小型轿车与原告发生碰撞，", "造成原告受伤。", "经交警部门认定，",
                 "被告负事故全部责任。", f"原告因此产生医疗费等损失共计{amt}元。"]
        view = ["公民的生命健康权受法律保护。", "被告负事故全部责任，", "应赔偿原告的合理损失。",
                f"经核算，原告的合理损失为{amt}元。"]
        law = "《中华人民共和国侵权责任法》第六条"
        order = f"被告{d}于本判决生效之日起十日内赔偿原告{p}各项损失{amt}元"
        s_facts = f"{date1}，被告驾驶车辆与原告发生碰撞，被告负事故全部责任，原告损失{amt}元。"
        s_view = f"被告负事故全部责任，应赔偿原告损失{amt}元。"
    defended = r.random() < 0.5
    defence = ([f"被告{d}辩称，", "原告所述不属实，", "请求驳回原告的诉讼请求。"] if defended else
               [f"被告{d}未作答辩。"])
    head = [f"{court}\n", "民事判决书\n", f"（{r.randint(2013, 2020)}）民初{r.randint(100, 9999)}号\n"]
    parties = _person(r, "原告", p) + [f"委托诉讼代理人：{lawyer}，", f"{r.choice(_PLACES)}律师事务所律师。"]
    parties += _person(r, "被告", d) if kind != "sale" else [f"被告：{d}，", f"住所地{city}。"]
    proc = [f"原告{p}与被告{d}{case}一案，", f"本院于{_date(r)}立案后，", "依法适用简易程序，",
            "公开开庭进行了审理。", f"原告{p}及其委托诉讼代理人{lawyer}到庭参加诉讼，",
            (f"被告{d}到庭参加诉讼。" if defended else f"被告{d}经本院传票传唤无正当理由拒不到庭参加诉讼。"),
            "本案现已审理终结。"]
    claims = [f"原告{p}向本院提出诉讼请求：", *[f"{i + 1}.{c}" for i, c in enumerate(claim)], "事实和理由：", *facts]
    tail = [f"依照{law}、", "《中华人民共和国民事诉讼法》第一百四十四条之规定，", "判决如下：",
            f"一、{order}；", f"二、驳回原告{p}的其他诉讼请求。", f"案件受理费{fee}元，", f"由被告{d}负担。",
            "如不服本判决，", "可在判决书送达之日起十五日内，", "向本院递交上诉状，",
            f"上诉于{city}中级人民法院。", f"审判员{judge}\n", f"{_date(r)}\n"]
    fixed = head + parties + proc + claims + defence + ["本院认为，"] + view + tail
    n_fixed = len(split_clauses("".join(fixed), None)) + 4  # + "经审理查明" and the repeated facts
    n_total = r.randint(max(min_clauses, n_fixed), max(max_clauses, n_fixed))
    fill = [r.choice(_FILLER) + r.choice("，，，。；") for _ in range(n_total - n_fixed)]
    cut = r.randint(0, len(fill))
    clauses = head + parties + proc + claims + defence + ["经审理查明，"] + fill[:cut] + facts[:3] + fill[cut:]
    clauses = clauses[:-1] + [clauses[-1].rstrip("，；") + "。"] + ["本院认为，"] + view + tail

    intro = r.choice(("原告诉称，", f"原告{p}诉称，", f"原告{p}向本院提出诉讼请求，"))
    s_claim = claim[0].rstrip("；") + "。"
    s_def = "被告辩称，原告所述不属实。" if defended else f"被告{d}未作答辩。"
    s_judge = r.choice(("判决：", "判决如下：", "法院判决："))
    if summary_style == "short":
        summary = (intro + s_claim + "法院认为，" + s_view + s_judge + order + "。")
    else:
        summary = (intro + s_claim + "事实和理由：" + s_facts + s_def + "法院认为，" + s_view
                   + f"依照{law}之规定，" + s_judge + order + "。")
    sentences = _clauses_to_sentences(clauses)
    key = {f"原告{p}向本院提出诉讼请求：", f"一、{order}；"}
    labels = [int(any(k in s for k in key)) for s in sentences]
    return Document(doc_id, tuple(sentences), tuple(labels), summary)


def synthetic_documents(n: int, seed: int = 0, min_clauses: int = 40, max_clauses: int = 150,
                        summary_style: str = "full") -> list[Document]:
    """`n` synthetic documents; deterministic in `seed`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= min_clauses <= max_clauses:
        raise ValueError(f"need 1 <= min_clauses <= max_clauses, got {min_clauses}, {max_clauses}")
    r = random.Random(seed)
    return [synthetic_document(r, f"synthetic-{seed}-{i}", min_clauses, max_clauses, summary_style) for i in range(n)]

"""Write data_samples/telegram/result.json: a synthetic Telegram Desktop full export.

Run: `python data_samples/make_sample_telegram.py` (deterministic: same bytes every time).

Everything here is invented: the owner "Алексей Смирнов" (user 1001), his
friend "Marina Volkova" (1002) and "Дима Козлов" (1003) are not real people,
and the phone, e-mail and card number are fake (planted so that the privacy
stage has something to scrub; the card number only passes the Luhn check).

The owner writes in one consistent style a fine-tune can pick up: all
lowercase, no final full stops, short messages often sent two in a row,
")" smileys, the emoji 🙃 and 🤙, and pet phrases ("ну такое", "го", "норм",
"кек", "ща", "в целом да"; in English "lol", "ngl", "bet"). Marina writes full,
capitalised sentences with 😊 and ❤️ and switches between Russian and English.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEED = 20240311
OUT = Path(__file__).resolve().parent / "telegram" / "result.json"
OWNER = ("Алексей", "Смирнов", 1001)
MARINA = ("Marina Volkova", "user1002")
ALEX = ("Алексей Смирнов", "user1001")
DIMA = ("Дима Козлов", "user1003")
START = datetime(2024, 3, 11, tzinfo=timezone.utc)  # Monday
LOCAL = timedelta(hours=3)  # Moscow: Telegram's "date" is the exporting computer's local time
FAKE_PHONE = "+7 916 123-45-67"
FAKE_EMAIL = "marina.volkova.demo@example.com"


def luhn_complete(prefix: str) -> str:
    """Append the Luhn check digit to a 15-digit prefix."""
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return prefix + str((10 - total % 10) % 10)


FAKE_CARD = " ".join(luhn_complete("220070012345678")[i:i + 4] for i in range(0, 16, 4))

# ---- dialogue bank: "A" = the owner, "M" = Marina; {x} fields are filled from FILL ----
FILL = {
    "film": ["Дюну", "Оппенгеймера", "новый сезон Фарго", "Бедные-несчастные", "Past Lives", "Shōgun"],
    "food": ["пиццу", "рамен", "хинкали", "фалафель", "сырники", "том ям"],
    "place": ["в Парк Горького", "на ВДНХ", "в Коломенское", "на Патрики", "в Зарядье", "на Воробьёвы"],
    "time": ["в 7", "к восьми", "в полседьмого", "после шести", "часов в 8"],
    "en_food": ["ramen", "pizza", "dumplings", "tacos", "pho"],
    "en_show": ["The Bear", "Severance", "Slow Horses", "Shōgun", "Fargo"],
}

RU_OPEN_MORNING = [
    [("M", "Доброе утро! ☀️ Как спалось?"), ("A", "доброе) ну такое"), ("A", "опять до двух сидел")],
    [("M", "Привет! Ты уже проснулся?"), ("A", "ща проснусь"), ("A", "кофе делаю 🙃")],
    [("M", "Утро! Не забудь, что сегодня дождь обещают 🌧"), ("A", "норм, зонт возьму)")],
    [("M", "Доброе утро 😊 Как настроение?"), ("A", "в целом да"), ("A", "в смысле норм)")],
]
RU_OPEN_EVENING = [
    [("M", "Привет! Как день прошёл?"), ("A", "норм) устал немного"), ("M", "Много работы было?"),
     ("A", "ну такое, созвоны весь день")],
    [("M", "Ты дома уже?"), ("A", "ща доеду"), ("A", "минут 20)")],
    [("M", "Ну что, как ты там? 😊"), ("A", "жив)"), ("A", "а ты как")],
    [("M", "Привет-привет! Чем занимаешься?"), ("A", "лежу кек"), ("A", "а что")],
]
EN_OPEN = [
    [("M", "Hey! How was your day?"), ("A", "pretty chill ngl"), ("A", "you?")],
    [("M", "Good morning! ☀️ Did you sleep well?"), ("A", "kinda lol"), ("A", "need coffee 🙃")],
    [("M", "Hiii 😊 are you free tonight?"), ("A", "yeah mostly"), ("A", "why)")],
]
RU_TOPICS = [
    [("M", "Слушай, может сходим в кино на выходных? Хочу посмотреть {film}"), ("A", "го"),
     ("A", "в субботу норм?"), ("M", "Да, суббота отлично! Тогда я посмотрю сеансы 😊"), ("A", "давай)")],
    [("M", "Я сегодня приготовила {food}, получилось очень вкусно!"), ("A", "кек завидую"),
     ("A", "оставь мне)"), ("M", "Ну не знаю, не знаю 😄"), ("A", "ну такое 🙃")],
    [("M", "Как думаешь, куда лучше пойти гулять: {place} или {place2}?"), ("A", "в целом да"),
     ("A", "то есть первое)"), ("M", "Ты невозможный 😂 Хорошо, тогда первое"), ("A", "го {time}")],
    [("M", "Ты видел новости про повышение цен на метро?"), ("A", "видел"), ("A", "ну такое конечно"),
     ("M", "Я теперь, наверное, буду больше пешком ходить"), ("A", "норм тема, полезно)")],
    [("M", "Мне начальница опять прислала задачу в пятницу вечером 😤"), ("A", "кек классика"),
     ("A", "забей до понедельника"), ("M", "Не могу, там дедлайн в понедельник утром"), ("A", "ну такое(")],
    [("M", "Что будешь делать на выходных?"), ("A", "ничего)"), ("A", "может в зал схожу"),
     ("M", "Звучит как план 😊"), ("A", "в целом да")],
    [("M", "Я записалась на курсы испанского!"), ("A", "о норм"), ("A", "hola или как там)"),
     ("M", "¡Hola! Да, именно так 😄"), ("A", "кек")],
    [("M", "Помнишь, ты обещал помочь мне с ноутбуком? Он опять тормозит"), ("A", "помню)"),
     ("A", "скинь что пишет диспетчер задач"), ("M", "Хорошо, вечером скину"), ("A", "🤙")],
    [("M", "У меня кот опять скинул цветок с подоконника 🙈"), ("A", "кек"), ("A", "он так протестует"),
     ("M", "Против чего?!"), ("A", "против цветка)")],
    [("M", "Я думаю купить велосипед на весну. Что посоветуешь?"), ("A", "городской бери"),
     ("A", "и замок нормальный"), ("M", "А сколько примерно стоит нормальный?"), ("A", "тысяч 40 в целом")],
    [("M", "Смотрю {film}, пока очень нравится!"), ("A", "норм"), ("A", "я на середине уснул 🙃"),
     ("M", "Ну ты как всегда 😄")],
    [("M", "Не могу выбрать подарок маме на день рождения"), ("A", "цветы + сертификат"), ("A", "беспроигрышно)"),
     ("M", "Скучно, но наверное ты прав"), ("A", "в целом да")],
    [("M", "Завтра бегу полумарафон, волнуюсь ужасно"), ("A", "ты сможешь)"), ("A", "главное не быстро в начале"),
     ("M", "Спасибо ❤️ Постараюсь!"), ("A", "🤙")],
    [("M", "Пошли в субботу в настолки к Диме?"), ("A", "го"), ("A", "во сколько"), ("M", "Он сказал {time}"),
     ("A", "норм)")],
    [("M", "У меня сегодня был очень странный день"), ("A", "что случилось"),
     ("M", "Сначала лифт застрял, потом ноутбук сел на важной встрече"), ("A", "ну такое"), ("A", "держись)")],
    [("M", "Хочу заказать {food}, будешь?"), ("A", "буду"), ("A", "давай на двоих)"),
     ("M", "Окей, заказываю!"), ("A", "🤙")],
    [("M", "Ты читал что-нибудь интересное последнее время?"), ("A", "не особо"), ("A", "статьи про раст кек"),
     ("M", "Ну это не считается 😄"), ("A", "считается)")],
    [("M", "Ура, меня повысили!!! 🎉"), ("A", "о круто"), ("A", "поздравляю)"), ("M", "Спасибо! Надо отметить 😊"),
     ("A", "го {time}")],
]
RU_TOPICS += [
    [("M", "Ты уже купил билеты домой на майские?"), ("A", "неа|ещё нет"), ("A", "ща гляну|вечером гляну)"),
     ("M", "Смотри, а то всё раскупят, как в прошлом году"), ("A", "в целом да"), ("A", "спасибо что напомнила)")],
    [("M", "Я нашла классную кофейню возле работы, там лавандовый раф ☕"), ("A", "лавандовый кек"),
     ("A", "ну такое|звучит странно)"), ("M", "Не суди, пока не попробуешь 😊"), ("A", "ладно, го завтра")],
    [("M", "Как прошла тренировка?"), ("A", "норм|тяжко)"), ("A", "ноги не чувствую 🙃"),
     ("M", "Это значит, что всё правильно делал 😄"), ("A", "в целом да")],
    [("M", "Представляешь, я сегодня встретила в метро Катю из школы!"), ("A", "о|ого"),
     ("A", "и как она"), ("M", "Вышла замуж, живёт в Питере, работает дизайнером"), ("A", "норм)")],
    [("M", "Мне кажется, я заболеваю 🤧"), ("A", "блин"), ("A", "чай с лимоном и спать|пей много и спи"),
     ("M", "Спасибо, доктор 😊"), ("A", "🤙")],
    [("M", "Ты не знаешь, где можно починить наушники?"), ("A", "на савёловском|в сервисе у метро"),
     ("A", "или новые купить кек"), ("M", "Новые жалко, они почти новые"), ("A", "ну такое, тогда сервис")],
    [("M", "Смотри, Дима зовёт на день рождения в пятницу"), ("A", "го"), ("A", "что дарим"),
     ("M", "Может, настолку какую-нибудь?"), ("A", "норм идея)")],
    [("M", "Я опять проспала будильник 😩"), ("A", "кек"), ("A", "бывает)"),
     ("M", "Третий раз за неделю!"), ("A", "ну такое 🙃|ставь два будильника")],
    [("M", "Ты пробовал новый грузинский ресторан на углу?"), ("A", "неа"), ("A", "норм там?"),
     ("M", "Хачапури просто огонь 🔥"), ("A", "го в пятницу|значит идём)")],
    [("M", "Хочу перекрасить стены в комнате. Зелёный или бежевый?"), ("A", "зелёный)"),
     ("A", "бежевый скучно"), ("M", "Вот и я так думаю!"), ("A", "🤙")],
    [("M", "Мне предложили работу в другой компании, не знаю, соглашаться ли"), ("A", "а зп?"),
     ("M", "На 20% больше, но ездить дальше"), ("A", "в целом да"), ("A", "я бы пошёл)")],
    [("M", "Ты сегодня на созвоне какой-то грустный был"), ("A", "не выспался просто"), ("A", "всё норм)"),
     ("M", "Точно? 😊"), ("A", "точно)")],
    [("M", "Смотрю на цены на квартиры и плачу 😭"), ("A", "кек"), ("A", "не смотри)"),
     ("M", "Гениальный совет 😂"), ("A", "ну такое")],
    [("M", "Завтра обещают первый тёплый день!"), ("A", "го гулять|го на велик"), ("A", "после работы)"),
     ("M", "Договорились! 😊")],
    [("M", "Ты слышал новый альбом? Мне очень нравится"), ("A", "ещё нет"), ("A", "скинь ссылку)"),
     ("M", "Сейчас скину ❤️"), ("A", "🤙")],
    [("M", "У нас на работе сегодня пожарная тревога была, час стояли на улице"), ("A", "кек"),
     ("A", "зато перерыв)"), ("M", "Ну да, в целом неплохо 😄"), ("A", "в целом да")],
]
EN_TOPICS = [
    [("M", "Have you started watching {en_show}?"), ("A", "yeah two episodes"), ("A", "kinda slow ngl"),
     ("M", "It gets so much better, trust me!"), ("A", "bet")],
    [("M", "I'm craving {en_food} so badly right now"), ("A", "lol same"), ("A", "wanna order?"),
     ("M", "Yes please! 😊"), ("A", "ok ordering")],
    [("M", "Do you think it'll be warm enough for a picnic on Sunday?"), ("A", "prob not lol"),
     ("A", "maybe next week"), ("M", "Fine, next week then!")],
    [("M", "My manager wants me to present tomorrow and I'm so nervous"), ("A", "you'll be fine"),
     ("A", "just dont read from slides lol"), ("M", "Thank you ❤️ I'll try!"), ("A", "🤙")],
    [("M", "Can you send me that playlist you mentioned?"), ("A", "ya sec"), ("A", "its mostly lofi lol"),
     ("M", "Perfect for work 😊")],
    [("M", "I finally finished my thesis draft!!!"), ("A", "lets go"), ("A", "proud of u)"),
     ("M", "Now I just need to survive the revisions 😅"), ("A", "ngl thats the worst part")],
    [("M", "What are you up to this weekend?"), ("A", "nothing much lol"), ("A", "maybe gym"),
     ("M", "Want to come to the flea market with me?"), ("A", "sure why not)")],
]
EN_TOPICS += [
    [("M", "Did you see the sunset today? The sky was pink!"), ("A", "missed it lol"), ("A", "was in a meeting"),
     ("M", "Next time I'll send you a photo 😊"), ("A", "bet)")],
    [("M", "I signed up for a pottery class, want to join?"), ("A", "lol me and pottery"), ("A", "ok why not"),
     ("M", "Yay! Thursday at 7 😊"), ("A", "🤙")],
    [("M", "Do you know any good podcasts?"), ("A", "mostly tech ones ngl"), ("A", "ill send a couple"),
     ("M", "Please nothing about crypto 😂"), ("A", "lol no promises")],
    [("M", "My sister is visiting next week, we should all have dinner!"), ("A", "sure"), ("A", "where tho"),
     ("M", "Maybe that Georgian place?"), ("A", "bet")],
    [("M", "I'm so tired of this rain"), ("A", "same lol"), ("A", "spring where"), ("M", "Apparently next week ☀️")],
    [("M", "Guess who just got tickets to the concert!!!"), ("A", "no way"), ("A", "ur the best)"),
     ("M", "I know 😎"), ("A", "lol")],
]
RU_CLOSE = [
    [("M", "Ладно, я спать. Спокойной ночи! 😊"), ("A", "спокойной)")],
    [("M", "Всё, побежала, до вечера!"), ("A", "давай 🤙")],
    [("M", "Мне пора, созвонимся потом"), ("A", "ок)")],
    [("M", "Good night! ❤️"), ("A", "night)")],
]
A_FILLERS = ["кек", "норм", "ну такое", "в целом да", "ща", "го", "🤙", "🙃", "))", "lol", "ngl", "bet"]
M_FILLERS = ["Ахаха 😂", "Согласна!", "Ну вот 😊", "Точно!", "Haha true", "Omg 😂"]

GROUP_SCRIPTS = [
    [("M", "Ребята, в субботу поход в силе?"), ("D", "Да! Я взял палатку"), ("A", "го"), ("A", "что брать"),
     ("D", "Спальник, воду и что-нибудь поесть"), ("M", "Я сделаю бутерброды 😊"), ("A", "норм)"),
     ("D", "Встречаемся на Савёловском в 8:30"), ("A", "ну такое рано"), ("M", "Лёша, без вариантов 😄"),
     ("A", "ладно)")],
    [("D", "Кто-нибудь знает прогноз на субботу?"), ("M", "+8 и солнце!"), ("A", "норм"),
     ("D", "Отлично, тогда шашлыки тоже берём"), ("A", "го"), ("M", "Я за ❤️")],
    [("D", "Фотки с похода скинул в облако"), ("M", "Спасибо! Какие красивые 😍"), ("A", "кек я там спящий"),
     ("D", "Это лучшая фотка 😂"), ("A", "ну такое"), ("M", "Надо повторить в апреле!"), ("A", "в целом да")],
]


class Export:
    """Builds Telegram message dicts with increasing ids and times."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.next_id = 100

    def _base(self, t: datetime, who: tuple[str, str] | None) -> dict:
        self.next_id += self.rng.choice([1, 1, 1, 2, 3])
        m = {"id": self.next_id, "type": "message", "date": (t + LOCAL).strftime("%Y-%m-%dT%H:%M:%S"),
             "date_unixtime": str(int(t.timestamp()))}
        if who is not None:
            m["from"], m["from_id"] = who
        return m

    def text(self, t, who, text, reply_to=None, entities=None, edited_after=None, forwarded_from=None):
        m = self._base(t, who)
        if edited_after is not None:
            e = t + edited_after
            m["edited"], m["edited_unixtime"] = (e + LOCAL).strftime("%Y-%m-%dT%H:%M:%S"), str(int(e.timestamp()))
        if forwarded_from:
            m["forwarded_from"] = forwarded_from
        if reply_to is not None:
            m["reply_to_message_id"] = reply_to
        if entities:  # a list of str / (type, text[, href])
            parts, ents = [], []
            for p in entities:
                if isinstance(p, str):
                    parts.append(p)
                    ents.append({"type": "plain", "text": p})
                else:
                    ent = {"type": p[0], "text": p[1]}
                    if len(p) > 2:
                        ent["href"] = p[2]
                    parts.append(ent)
                    ents.append(ent)
            m["text"], m["text_entities"] = parts, ents
        else:
            m["text"], m["text_entities"] = text, ([{"type": "plain", "text": text}] if text else [])
        return m

    def photo(self, t, who, caption=""):
        m = self._base(t, who)
        m.update({"photo": f"photos/photo_{self.next_id}@{(t + LOCAL):%d-%m-%Y_%H-%M-%S}.jpg",
                  "width": 1280, "height": 960, "text": caption,
                  "text_entities": [{"type": "plain", "text": caption}] if caption else []})
        return m

    def voice(self, t, who, seconds):
        m = self._base(t, who)
        m.update({"file": f"voice_messages/audio_{self.next_id}@{(t + LOCAL):%d-%m-%Y_%H-%M-%S}.ogg",
                  "media_type": "voice_message", "mime_type": "audio/ogg", "duration_seconds": seconds,
                  "text": "", "text_entities": []})
        return m

    def sticker(self, t, who, emoji):
        m = self._base(t, who)
        m.update({"file": "stickers/sticker.webp", "thumbnail": "stickers/sticker.webp_thumb.jpg",
                  "media_type": "sticker", "sticker_emoji": emoji, "mime_type": "image/webp",
                  "width": 512, "height": 512, "text": "", "text_entities": []})
        return m

    def service(self, t, actor, action, **extra):
        m = self._base(t, None)
        m["type"] = "service"
        m.update({"actor": actor[0], "actor_id": actor[1], "action": action, **extra,
                  "text": "", "text_entities": []})
        return m


def fill(text: str, rng: random.Random) -> str:
    out = rng.choice(text.split("|"))  # "a|b": one of the variants
    for key, options in FILL.items():
        out = out.replace("{" + key + "}", rng.choice(options))
    return out.replace("{place2}", rng.choice(FILL["place"]))


def personal_chat(ex: Export, rng: random.Random) -> list[dict]:
    msgs: list[dict] = []
    who = {"A": ALEX, "M": MARINA}
    last_marina_q: int | None = None
    decks: dict[str, list] = {"ru": [], "en": []}  # topics come from a shuffled deck: few repeats
    specials = {  # (day, session) -> extra event planted once
        (0, 1): "entities", (1, 2): "phone", (2, 0): "photo", (2, 2): "call", (3, 1): "forward_m",
        (3, 2): "email", (4, 0): "voice", (4, 2): "edit", (5, 1): "card", (5, 2): "forward_a",
        (6, 0): "pin", (6, 1): "photo", (7, 2): "voice",
    }
    for day in range(9):
        starts = [(8, 10), (13, 15), (19, 22)]
        for s, (h0, h1) in enumerate(starts):
            if rng.random() < 0.12 and s != 2 and (day, s) not in specials:
                continue  # some sessions just do not happen: gaps of many hours
            t = START + timedelta(days=day, hours=rng.randint(h0, h1) - 3, minutes=rng.randint(0, 59))
            english = rng.random() < 0.3
            opener = rng.choice(EN_OPEN if english else (RU_OPEN_MORNING if s == 0 else RU_OPEN_EVENING))
            deck = decks["en" if english else "ru"]
            topics = []
            for _ in range(rng.choice([2, 2, 3])):
                if not deck:
                    deck.extend(rng.sample(EN_TOPICS if english else RU_TOPICS, k=len(EN_TOPICS if english else RU_TOPICS)))
                topics.append(deck.pop())
            lines = list(opener) + [ln for tpc in topics for ln in tpc]
            if s == 2 or rng.random() < 0.3:
                lines += rng.choice(RU_CLOSE)
            special = specials.get((day, s))
            for i, (spk, text) in enumerate(lines):
                t += timedelta(seconds=rng.randint(8, 40) if spk == "A" and i and lines[i - 1][0] == "A"
                               else rng.randint(20, 420))
                text = fill(text, rng)
                reply = None
                if spk == "A" and last_marina_q and rng.random() < 0.18:
                    reply = last_marina_q
                m = ex.text(t, who[spk], text, reply_to=reply)
                msgs.append(m)
                last_marina_q = m["id"] if spk == "M" and text.rstrip(" 😊").endswith("?") else last_marina_q
                if spk == "A" and rng.random() < 0.08:
                    t += timedelta(seconds=rng.randint(5, 20))
                    msgs.append(ex.text(t, ALEX, rng.choice(A_FILLERS)))
                elif spk == "M" and rng.random() < 0.05:
                    t += timedelta(seconds=rng.randint(15, 60))
                    msgs.append(ex.text(t, MARINA, rng.choice(M_FILLERS)))
                if rng.random() < 0.035:
                    t += timedelta(seconds=rng.randint(5, 30))
                    msgs.append(ex.sticker(t, who[spk], rng.choice(["👍", "😂", "🙃", "❤️", "🤙"])))
                if i == 1 and special:
                    t += timedelta(seconds=rng.randint(30, 90))
                    msgs.extend(_special(ex, rng, special, t, msgs))
    return msgs


def _special(ex: Export, rng: random.Random, what: str, t: datetime, msgs: list[dict]) -> list[dict]:
    s = timedelta(seconds=40)
    if what == "entities":
        return [ex.text(t, MARINA, "", entities=["Смотри, какой маршрут нашла: ",
                                                 ("text_link", "тропа у озера", "https://example.com/trail"),
                                                 " — ", ("bold", "всего 12 км"), "!"]),
                ex.text(t + s, ALEX, "", entities=[("bold", "го"), " в субботу)"])]
    if what == "phone":
        return [ex.text(t, MARINA, "Напомни свой новый номер? Старый не отвечает"),
                ex.text(t + s, ALEX, f"{FAKE_PHONE}"), ex.text(t + 2 * s, ALEX, "старый всё, сим сдох)")]
    if what == "email":
        return [ex.text(t, ALEX, "скинь презентацию на почту"),
                ex.text(t + s, MARINA, f"Давай лучше ты мне напиши: {FAKE_EMAIL}, так быстрее найду"),
                ex.text(t + 2 * s, ALEX, "ок)")]
    if what == "card":
        return [ex.text(t, MARINA, "Сколько я тебе должна за билеты? Скинь номер карты"),
                ex.text(t + s, ALEX, f"{FAKE_CARD}"), ex.text(t + 2 * s, ALEX, "1200 с тебя)")]
    if what == "photo":
        return [ex.photo(t, MARINA, rng.choice(["Смотри, какой закат! 😍", "Мой завтрак 😊", ""])),
                ex.text(t + s, ALEX, rng.choice(["кек красиво", "норм)", "ну такое 🙃"]))]
    if what == "voice":
        return [ex.voice(t, ALEX, rng.randint(4, 25)), ex.text(t + s, MARINA, "Голосовое послушала, договорились!")]
    if what == "call":
        return [ex.service(t, MARINA, "phone_call", duration_seconds=rng.randint(60, 900), discard_reason="hangup"),
                ex.text(t + 4 * s, ALEX, "связь ну такое была")]
    if what == "forward_m":
        return [ex.text(t, MARINA, "В эти выходные бесплатный вход во все музеи! Суббота 10:00–22:00.",
                        forwarded_from="Афиша Москвы"),
                ex.text(t + s, MARINA, "Пойдём? 😊"), ex.text(t + 2 * s, ALEX, "го")]
    if what == "forward_a":
        return [ex.text(t, ALEX, "When the code works on the first try: 😱", forwarded_from="Tech Memes"),
                ex.text(t + s, ALEX, "это я)"), ex.text(t + 2 * s, MARINA, "Ахаха 😂")]
    if what == "edit":
        return [ex.text(t, ALEX, "встречаемся у метро в 7 не в 6", edited_after=timedelta(seconds=50)),
                ex.text(t + s, MARINA, "Поняла, в семь 👌", edited_after=timedelta(minutes=2))]
    if what == "pin":
        target = next(m["id"] for m in reversed(msgs) if m.get("from_id") == MARINA[1])
        return [ex.service(t, ALEX, "pin_message", message_id=target)]
    raise ValueError(what)


def group_chat(ex: Export, rng: random.Random) -> list[dict]:
    who = {"A": ALEX, "M": MARINA, "D": DIMA}
    t = START + timedelta(days=2, hours=15, minutes=12)
    msgs = [ex.service(t, DIMA, "create_group", title="Поход в выходные", members=[DIMA[0], MARINA[0], ALEX[0]])]
    for day, script in zip((2, 4, 6), GROUP_SCRIPTS):
        t = START + timedelta(days=day, hours=rng.randint(14, 17), minutes=rng.randint(0, 59))
        for spk, text in script:
            t += timedelta(seconds=rng.randint(15, 300))
            msgs.append(ex.text(t, who[spk], text))
        if day == 6:
            t += timedelta(minutes=2)
            msgs.append(ex.photo(t, DIMA, "Вот общая 📸"))
            msgs.append(ex.sticker(t + timedelta(seconds=30), ALEX, "🤙"))
    return msgs


def build() -> dict:
    rng = random.Random(SEED)
    ex = Export(rng)
    personal = personal_chat(ex, rng)
    ex.next_id = 5000
    group = group_chat(ex, rng)
    first, last, uid = OWNER
    return {
        "about": "Here is the data you requested. Remember: Telegram is ad free, it doesn't sell your data.",
        "personal_information": {"user_id": uid, "first_name": first, "last_name": last,
                                 "phone_number": FAKE_PHONE, "username": "@alexey_demo", "bio": ""},
        "contacts": {"about": "This is your contact list.", "list": [
            {"user_id": 1002, "first_name": "Marina", "last_name": "Volkova", "phone_number": "+7 900 000-00-02",
             "date": "2023-05-02T12:00:00", "date_unixtime": "1683018000"},
            {"user_id": 1003, "first_name": "Дима", "last_name": "Козлов", "phone_number": "+7 900 000-00-03",
             "date": "2023-06-10T12:00:00", "date_unixtime": "1686387600"}]},
        "chats": {"about": "This page lists all chats from this export.", "list": [
            {"name": MARINA[0], "type": "personal_chat", "id": 1002, "messages": personal},
            {"name": "Поход в выходные", "type": "private_group", "id": 4001, "messages": group},
        ]},
        "left_chats": {"about": "This page lists all supergroups and channels you've left.", "list": []},
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = build()
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    n = [len(c["messages"]) for c in data["chats"]["list"]]
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB, chats: {n} messages)")


if __name__ == "__main__":
    main()

"""Seeded SAMSum-style chats with reference summaries: the offline dialogue-summarisation task.

SAMSum (the paper's second task) is messenger chat between friends summarised in one or two third-person
sentences ("Amanda will meet Hannah at the cinema at 7 pm."). Real SAMSum is not shipped; this
generator writes chats of the same kind — informal turns, names before a colon, small talk, stickers
and photos as ``<file_photo>`` — about everyday arrangements (meeting up, running late, lending things,
errands, invitations, pet sitting, ...), each with a summary built from the same facts the chat
states. A fine-tuned model can learn the summary style in a short run, which the seed does not write
on its own, so ROUGE-1 separates a tuned model from the seed as the math task's accuracy does.

Every summary is checked against its chat: each name, time, place and thing the summary mentions must
occur in the chat (:func:`check_summary`), so a template bug raises instead of shipping a wrong label.

Train and test never share a chat: each chat text is assigned to one split by a hash of the text
(:func:`split_of`), and ``generate_dialogues(split=...)`` keeps only chats of its split, whatever the seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from ..errors import UserError
from .splits import SPLITS, TEST_FRACTION, distinct_of_split, hash_split  # noqa: F401 - re-exported

Dialogue = dict[str, str]

# (name, subject pronoun, object pronoun, possessive)
PEOPLE = [
    ("Hannah", "she", "her", "her"), ("Amanda", "she", "her", "her"), ("Eric", "he", "him", "his"),
    ("Rob", "he", "him", "his"), ("Lenny", "he", "him", "his"), ("Emma", "she", "her", "her"),
    ("Will", "he", "him", "his"), ("Jane", "she", "her", "her"), ("Ollie", "he", "him", "his"),
    ("Kate", "she", "her", "her"), ("Mark", "he", "him", "his"), ("Julia", "she", "her", "her"),
    ("Tim", "he", "him", "his"), ("Sophie", "she", "her", "her"), ("Adam", "he", "him", "his"),
    ("Laura", "she", "her", "her"), ("Pete", "he", "him", "his"), ("Monica", "she", "her", "her"),
    ("Greg", "he", "him", "his"), ("Olivia", "she", "her", "her"), ("Max", "he", "him", "his"),
    ("Chloe", "she", "her", "her"), ("Dan", "he", "him", "his"), ("Ella", "she", "her", "her"),
    ("Frank", "he", "him", "his"), ("Iris", "she", "her", "her"), ("Jake", "he", "him", "his"),
    ("Nora", "she", "her", "her"), ("Paul", "he", "him", "his"), ("Rita", "she", "her", "her"),
    ("Steve", "he", "him", "his"), ("Tina", "she", "her", "her"), ("Victor", "he", "him", "his"),
    ("Wendy", "she", "her", "her"), ("Yusuf", "he", "him", "his"), ("Zara", "she", "her", "her"),
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
HOURS = ["5 pm", "6 pm", "7 pm", "8 pm", "6:30 pm", "7:30 pm", "noon", "1 pm", "10 am", "11 am"]
ACTIVITIES = [  # (what they will do, the place it happens)
    ("see a film", "the cinema"), ("have coffee", "the cafe on Main Street"), ("have lunch", "the Thai place"),
    ("go for a run", "the park"), ("visit the museum", "the museum"), ("play tennis", "the sports centre"),
    ("have dinner", "the Italian restaurant"), ("go bowling", "the bowling alley"),
    ("study together", "the library"), ("go swimming", "the pool"), ("have a drink", "the pub near the station"),
]
DELAYS = ["10", "15", "20", "30", "40"]
REASONS_LATE = ["traffic", "a delayed train", "a flat tyre", "a long meeting", "the rain", "a missed bus"]
LEND_ITEMS = [  # (thing, what it is for)
    ("drill", "put up some shelves"), ("ladder", "clean the gutters"), ("tent", "go camping"),
    ("camera", "take photos at a wedding"), ("suitcase", "go on a trip"), ("bike", "ride to work"),
    ("charger", "charge a laptop"), ("blender", "make smoothies"), ("projector", "show a presentation"),
    ("sleeping bag", "stay at a friend's place"), ("jump leads", "start a car"),
]
WHEN_LEND = ["tomorrow morning", "tonight", "after work", "on Saturday", "this evening"]
GROCERIES = ["milk", "bread", "eggs", "bananas", "cheese", "coffee", "rice", "tomatoes", "butter",
             "apples", "pasta", "yoghurt", "onions", "orange juice", "chicken"]
LOST_ITEMS = ["keys", "wallet", "glasses", "phone charger", "umbrella", "headphones", "scarf", "passport"]
SPOTS = ["on the kitchen table", "in the car", "next to the sofa", "in the bathroom", "by the front door",
         "in your coat pocket", "on the bookshelf", "in the hallway drawer"]
EVENTS = ["birthday party", "barbecue", "housewarming party", "board game night", "dinner party", "picnic"]
EXCUSES = ["has to work late", "is visiting family", "has an exam the next day", "is ill",
           "has tickets for a concert", "is moving house"]
FOODS = ["a cake", "some drinks", "a salad", "snacks", "dessert", "some music"]
PICKUP_PLACES = ["the station", "the airport", "the bus stop", "the office", "the gym"]
CITIES = ["Berlin", "Lisbon", "Warsaw", "Dublin", "Rome", "Madrid", "Prague", "Vienna", "Oslo"]
PETS = [("cat", "Milo"), ("dog", "Bella"), ("rabbit", "Coco"), ("cat", "Luna"), ("dog", "Rex"),
        ("parrot", "Kiwi"), ("hamster", "Peanut")]
KEY_SPOTS = ["under the mat", "with the neighbour", "in the flower pot", "in the letterbox"]
RECOMMEND = [  # (what is asked for, recommendation)
    ("a good pizza place", "Luigi's"), ("a film for tonight", "The Long Road"), ("a book for the holiday", "Salt Bay"),
    ("a hairdresser", "Studio Nine"), ("a plumber", "Mr Doyle"), ("a sushi place", "Sora"),
    ("a podcast about history", "Old Maps"), ("a dentist", "Dr Patel"), ("a bakery", "Crumbs"),
]
GIFTS = ["a scarf", "a book", "concert tickets", "a plant", "a board game", "a watch", "a cookbook", "headphones"]
COSTS = ["15", "20", "25", "30", "40"]
WEATHER = ["rain", "snow", "storm", "wind"]
PLANS = ["picnic", "football match", "barbecue", "hike", "boat trip", "street festival"]
SUBJECTS = ["maths", "chemistry", "history", "French", "physics", "biology"]
FILMS = ["The Long Road", "Night Train", "Blue Harbour", "The Last Summer", "Paper Moon", "Iron Valley"]
OPINIONS = [("loved", "it was brilliant"), ("liked", "it was quite good"), ("didn't like", "it was boring"),
            ("hated", "it was a waste of time")]

GREETINGS = ["Hi!", "Hey", "hey you", "Hello :)", "Hiya", "Hey, how are you?"]
ACKS = ["ok", "Ok great", "Perfect", "Cool", "Sure", "Sounds good", "👍", "Great, thanks!", "Deal"]
THANKS = ["Thanks!", "thank you so much", "You're the best", "Thx :)", "Thanks a lot!"]
FILLER = ["<file_gif>", "<file_photo>", "haha", ":D", "lol", "<file_sticker>"]


def _people(rng: random.Random, k: int) -> list[tuple[str, str, str, str]]:
    return rng.sample(PEOPLE, k)


def _maybe(rng: random.Random, p: float, line: str) -> list[str]:
    return [line] if rng.random() < p else []


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# Each template returns (turns, summary): turns as "Name: text" lines. The summary states only facts
# the turns state, in SAMSum's style: third person, one or two short sentences.

def _t_meet(rng):
    (a, *_), (b, *_) = _people(rng, 2)
    what, place = rng.choice(ACTIVITIES)
    day = rng.choice(DAYS)
    t1, t2 = rng.sample(HOURS, 2)
    turns = [f"{a}: {rng.choice(GREETINGS)}",
             rng.choice([f"{a}: Do you want to {what} on {day}?", f"{a}: Fancy going to {place} on {day}? We could {what}",
                         f"{a}: Are you free on {day}? I'd love to {what}"])]
    turns += _maybe(rng, 0.4, f"{b}: {rng.choice(FILLER)}")
    if rng.random() < 0.5:
        turns += [f"{b}: Sure! What time?", f"{a}: {t1} at {place}?", f"{b}: {rng.choice(ACKS)}"]
        summary = f"{a} and {b} will {what} at {place} on {day} at {t1}."
    else:
        turns += [f"{b}: Yes, but I can't make it before {t2}", f"{a}: {t2} is fine, see you at {place}",
                  f"{b}: {rng.choice(ACKS)}"]
        summary = f"{a} and {b} will {what} on {day}. They will meet at {place} at {t2}."
    return turns, summary


def _t_late(rng):
    (a, sa, _, _), (b, *_) = _people(rng, 2)
    delay, reason = rng.choice(DELAYS), rng.choice(REASONS_LATE)
    what, place = rng.choice(ACTIVITIES)
    turns = [rng.choice([f"{a}: I'm so sorry, I'm running late", f"{a}: Bad news, I'll be late",
                         f"{a}: Hey, I'm going to be late, sorry!!"]),
             f"{b}: Oh no, what happened?",
             rng.choice([f"{a}: {_cap(reason)}, I'm stuck", f"{a}: {_cap(reason)}... typical", f"{a}: {_cap(reason)} :("]),
             f"{b}: How long?", f"{a}: About {delay} minutes"]
    if rng.random() < 0.5:
        turns += [f"{b}: No worries, I'll wait inside {place}", f"{a}: {rng.choice(THANKS)}"]
        summary = f"{a} will be {delay} minutes late because of {reason}. {b} will wait inside {place}."
    else:
        turns += [f"{b}: Ok, I'll order for both of us", f"{a}: {rng.choice(THANKS)}"]
        summary = f"{a} will be {delay} minutes late because of {reason}, so {b} will order for both of them."
    return turns, summary


def _t_borrow(rng):
    (a, *_), (b, _, _, pb), (c, *_) = _people(rng, 3)
    item, purpose = rng.choice(LEND_ITEMS)
    when = rng.choice(WHEN_LEND)
    turns = [f"{a}: {rng.choice(GREETINGS)}",
             rng.choice([f"{a}: Could I borrow your {item}? I need to {purpose}",
                         f"{a}: Do you still have that {item}? I want to {purpose}",
                         f"{a}: Any chance you could lend me your {item}? Have to {purpose}"])]
    if rng.random() < 0.7:
        turns += [f"{b}: Of course", f"{b}: I can drop it off {when}", f"{a}: {rng.choice(THANKS)}"]
        turns += _maybe(rng, 0.3, f"{b}: {rng.choice(FILLER)}")
        summary = f"{b} will lend {a} {pb} {item} {when}, so {a} can {purpose}."
    else:
        turns += [f"{b}: Sorry, {c} borrowed it last week", f"{b}: Ask {c}, maybe they're done with it",
                  f"{a}: Ok, I'll text {c}"]
        summary = f"{a} wants to borrow {b}'s {item}, but {c} has it. {a} will text {c}."
    return turns, summary


def _t_shopping(rng):
    (a, *_), (b, *_) = _people(rng, 2)
    x, y, z = rng.sample(GROCERIES, 3)
    turns = [rng.choice([f"{a}: Are you at the shop?", f"{a}: Are you passing the supermarket on the way home?",
                         f"{a}: Can you do some shopping on your way back?"]),
             f"{b}: Yes, what do you need?", f"{a}: {_cap(x)} and {y} please"]
    if rng.random() < 0.5:
        turns += [f"{b}: Do we need {z} too?", f"{a}: Yes, good idea", f"{b}: {rng.choice(ACKS)}"]
        summary = f"{b} will buy {x}, {y} and {z} on the way home."
    else:
        turns += [f"{b}: Anything else? {_cap(z)}?", f"{a}: No, we still have {z}", f"{b}: {rng.choice(ACKS)}"]
        summary = f"{b} will buy {x} and {y} on the way home. They still have {z}."
    return turns, summary


def _t_lost(rng):
    (a, _, _, pa), (b, *_) = _people(rng, 2)
    item, spot = rng.choice(LOST_ITEMS), rng.choice(SPOTS)
    seen = spot.replace("your", pa)
    turns = [rng.choice([f"{a}: Have you seen my {item}?", f"{a}: I can't find my {item} anywhere",
                         f"{a}: Help! My {item} is gone"]),
             f"{b}: When did you last have it?", f"{a}: No idea, this morning maybe",
             f"{b}: I think I saw it {spot}", f"{a}: Found it!! {rng.choice(THANKS)}"]
    turns += _maybe(rng, 0.4, f"{b}: {rng.choice(FILLER)}")
    summary = f"{a} couldn't find {pa} {item}. {b} saw it {seen}, and {a} found it there."
    return turns, summary


def _t_invite(rng):
    (a, _, _, pa), (b, sb, _, _) = _people(rng, 2)
    event, day = rng.choice(EVENTS), rng.choice(DAYS)
    turns = [f"{a}: {rng.choice(GREETINGS)}",
             rng.choice([f"{a}: I'm having a {event} on {day}, would you like to come?",
                         f"{a}: You're invited to my {event} on {day}!", f"{a}: {event.title()} at mine on {day}, you in?"])]
    if rng.random() < 0.5:
        excuse = rng.choice(EXCUSES)
        turns += [f"{b}: I'd love to but I can't", f"{b}: I {excuse.replace('is ', 'am ').replace('has ', 'have ')}",
                  f"{a}: Oh that's a shame, next time!", f"{b}: Definitely"]
        summary = f"{a} invited {b} to {pa} {event} on {day}, but {b} can't come because {sb} {excuse}."
    else:
        food = rng.choice(FOODS)
        turns += [f"{b}: Yes!! What should I bring?", f"{a}: Maybe {food}?", f"{b}: {rng.choice(ACKS)}"]
        summary = f"{b} will come to {a}'s {event} on {day} and bring {food}."
    return turns, summary


def _t_pickup(rng):
    (a, _, oa, _), (b, *_) = _people(rng, 2)
    place, hour = rng.choice(PICKUP_PLACES), rng.choice(HOURS)
    turns = [rng.choice([f"{a}: Could you pick me up from {place}?", f"{a}: Any chance of a lift from {place}?",
                         f"{a}: Can you come and get me at {place}?"]),
             f"{b}: When?", f"{a}: At {hour}"]
    turns += _maybe(rng, 0.3, f"{a}: {rng.choice(FILLER)}")
    turns += [f"{b}: No problem, I'll be there at {hour}", f"{a}: {rng.choice(THANKS)}"]
    summary = f"{b} will pick {a} up from {place} at {hour}."
    return turns, summary


def _t_petsit(rng):
    (a, _, _, pa), (b, *_) = _people(rng, 2)
    city, days = rng.choice(CITIES), rng.choice(["two", "three", "four", "five"])
    pet, pname = rng.choice(PETS)
    key = rng.choice(KEY_SPOTS)
    turns = [f"{a}: Hey, I'm going to {city} for {days} days",
             rng.choice([f"{a}: Could you feed {pname} while I'm away? The {pet} gets hungry :D",
                         f"{a}: Would you look after {pname}? My {pet} needs feeding",
                         f"{a}: Can you take care of {pname} for me? You know, my {pet}"]),
             f"{b}: Sure, I love {pname}!", f"{b}: How do I get in?", f"{a}: The key is {key}"]
    turns += _maybe(rng, 0.4, f"{a}: {rng.choice(FILLER)}")
    turns += [f"{b}: {rng.choice(ACKS)}", f"{a}: {rng.choice(THANKS)}"]
    summary = f"{a} is going to {city} for {days} days. {b} will feed {pa} {pet} {pname}; the key is {key}."
    return turns, summary


def _t_recommend(rng):
    (a, *_), (b, *_) = _people(rng, 2)
    asked, answer = rng.choice(RECOMMEND)
    turns = [rng.choice([f"{a}: Do you know {asked}?", f"{a}: Can you recommend {asked}?",
                         f"{a}: Quick question, do you know {asked}?"]),
             f"{b}: Try {answer}", f"{b}: Everyone I know likes {answer}"]
    turns += _maybe(rng, 0.4, f"{b}: {rng.choice(FILLER)}")
    turns += [f"{a}: I'll check it out, {rng.choice(THANKS).lower()}"]
    summary = f"{a} asked {b} for {asked}. {b} recommends {answer}."
    return turns, summary


def _t_gift(rng):
    (a, *_), (b, *_), (c, _, oc, _) = _people(rng, 3)
    g1, g2 = rng.sample(GIFTS, 2)
    cost = rng.choice(COSTS)
    turns = [f"{a}: {c}'s birthday is next week, what should we get?", f"{b}: Maybe {g1}?",
             f"{a}: {c} already has {g1}. What about {g2}?", f"{b}: Good idea",
             f"{a}: It's {int(cost) * 2} in total, so {cost} each?", f"{b}: {rng.choice(ACKS)}"]
    summary = f"{a} and {b} will buy {c} {g2} for {c}'s birthday. They will pay {cost} each."
    return turns, summary


def _t_weather(rng):
    (a, *_), (b, *_) = _people(rng, 2)
    plan, weather = rng.choice(PLANS), rng.choice(WEATHER)
    d1, d2 = rng.sample(DAYS, 2)
    turns = [f"{a}: Have you seen the forecast for {d1}?", f"{b}: No, why?",
             f"{a}: They say {weather} all day", f"{a}: The {plan} is cancelled",
             f"{b}: What a pity", f"{a}: We moved it to {d2}", f"{b}: {rng.choice(ACKS)}"]
    summary = f"The {plan} on {d1} is cancelled because of the {weather}. It is moved to {d2}."
    return turns, summary


def _t_homework(rng):
    (a, *_), (b, _, _, _) = _people(rng, 2)
    subject, hour = rng.choice(SUBJECTS), rng.choice(HOURS)
    turns = [f"{a}: {rng.choice(GREETINGS)}",
             rng.choice([f"{a}: I'm stuck with the {subject} homework", f"{a}: Did you do the {subject} homework? I don't get it",
                         f"{a}: Can you help me with {subject}?"]),
             f"{b}: I did it yesterday", f"{b}: I can call you at {hour} and explain", f"{a}: {rng.choice(THANKS)}"]
    summary = f"{a} needs help with the {subject} homework. {b} will call {a} at {hour} to explain it."
    return turns, summary


def _t_film(rng):
    (a, *_), (b, *_) = _people(rng, 2)
    film = rng.choice(FILMS)
    verb, why = rng.choice(OPINIONS)
    turns = [f"{b}: Did you see {film} in the end?", f"{a}: Yes, yesterday", f"{b}: And?",
             f"{a}: I {verb} it", f"{a}: Honestly {why}"]
    turns += _maybe(rng, 0.5, f"{b}: {rng.choice(FILLER)}")
    turns += [f"{b}: Good to know"]
    summary = f"{a} saw {film} yesterday and {verb} it."
    return turns, summary


TEMPLATES: tuple[Callable, ...] = (
    _t_meet, _t_late, _t_borrow, _t_shopping, _t_lost, _t_invite, _t_pickup, _t_petsit, _t_recommend,
    _t_gift, _t_weather, _t_homework, _t_film,
)

_WORD = re.compile(r"[A-Za-z0-9']+")
# Words a summary may use that the chat need not contain: SAMSum's narrating vocabulary.
_NARRATION = frozenset("""
a an and the of to at in on for from with so but because there it its they them their is are was will
would can can't couldn't he she him her his hers be by both up wants needs asked invited recommends
come bring buy pay each help explain found saw lend moved cancelled going still have has feed
birthday homework yesterday way home day days time all inside order find couldn't pick meet borrow
""".split())


split_of = hash_split  # the split a chat belongs to, fixed by a hash of its text (not by seeds)


def check_summary(dialogue: str, summary: str) -> None:
    """Raise if the summary names something the chat does not say (a word outside the chat and the
    narrating vocabulary), so a template can never ship a label about facts it did not write."""
    chat = {w.lower() for w in _WORD.findall(dialogue)}
    extra = [w for w in _WORD.findall(summary) if w.lower() not in chat and w.lower() not in _NARRATION
             and not re.fullmatch(r"[A-Z][a-z]+'s", w)]
    if extra:
        raise ValueError(f"summary words not in the chat: {extra} in {summary!r}")


def generate_dialogues(n: int, *, seed: int = 0, split: str = "train") -> list[Dialogue]:
    """``n`` distinct chats ``{"dialogue", "summary"}`` in SAMSum format (``Name: text`` lines).

    Deterministic in (``n``, ``seed``, ``split``); a longer list with the same arguments starts with
    the shorter one. Chats of ``split="test"`` never occur in ``"train"`` for any seed.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    if n < 0:
        raise UserError(f"number of dialogues must be >= 0, got {n}")
    rng = random.Random(f"dialoguegen/{split}/{seed}")

    def draw() -> tuple[str, Callable[[], Dialogue]]:
        turns, summary = TEMPLATES[rng.randrange(len(TEMPLATES))](rng)
        dialogue = "\n".join(turns)

        def make() -> Dialogue:
            check_summary(dialogue, summary)
            return {"dialogue": dialogue, "summary": summary}

        return dialogue, make

    return distinct_of_split(n, split, draw, "dialogues")

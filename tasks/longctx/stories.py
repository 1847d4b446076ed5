"""Story tasks in natural language (after the Sparse Frontier's procedurally generated stories).

A story follows one protagonist through numbered chapters. In each chapter they travel to a place,
meet a named character, usually buy an item from them (items are unique within a story) and
sometimes sell an item bought earlier; filler sentences fill the rest. Length is set by the number
of chapters (plus a short epilogue that pads to the exact length).

- story_retrieval: "In Chapter 12, which place did Arion visit?" (or whom did they meet, or which
  item did they buy). One fact in one chapter. Scoring: exact.
- story_multihop: "What was the last item Arion bought before buying the blue copper lantern?"
  Find the chapter of that purchase, then the previous chapter with a purchase. Scoring: exact.
- story_filtering: "In which chapters did Arion buy nothing?" Exactly `num_chapters` chapters
  have no purchase (no selling in these stories, so nothing else depends on purchases).
  Scoring: set over chapter numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.longctx import LengthTooShort, TokenCounter, finish, fit_to_length, format_prompt, sample_rng

PROTAGONISTS = ("Arion", "Mira", "Tobias", "Selene", "Corin", "Liora", "Edric", "Nessa", "Bram", "Ysolde",
                "Fenn", "Talia", "Oswin", "Rhea", "Dorian", "Ilse")
CHARACTERS = (("Oona", "weaver"), ("Garrick", "blacksmith"), ("Pell", "fisherman"), ("Marisol", "baker"),
              ("Hugo", "ferryman"), ("Wren", "herbalist"), ("Anselm", "monk"), ("Kestra", "trader"),
              ("Lucan", "shepherd"), ("Imelda", "innkeeper"), ("Rowan", "carpenter"), ("Saskia", "potter"),
              ("Quill", "scribe"), ("Thea", "midwife"), ("Bartholomew", "miller"), ("Juniper", "gardener"),
              ("Cassius", "soldier"), ("Delphine", "singer"), ("Ezra", "tinker"), ("Fiora", "cartographer"),
              ("Gideon", "brewer"), ("Hester", "tailor"), ("Ivo", "glassblower"), ("Jessamy", "beekeeper"),
              ("Konrad", "mason"), ("Lark", "minstrel"), ("Magnus", "shipwright"), ("Nell", "seamstress"),
              ("Orrin", "lamplighter"), ("Petra", "apothecary"), ("Rufus", "cooper"), ("Sable", "hunter"),
              ("Tamsin", "dyer"), ("Ulric", "woodcutter"), ("Vesna", "painter"), ("Wystan", "clockmaker"),
              ("Xenia", "jeweller"), ("Yorick", "gravedigger"), ("Zelda", "cheesemaker"), ("Alaric", "toll keeper"))
PLACES = ("the old lighthouse", "the river market", "the salt mines", "the northern pass", "the abbey ruins",
          "the harbour town", "the willow ford", "the copper hills", "the border fort", "the sunken library",
          "the fishing village", "the high moor", "the amber forest", "the stone circle", "the royal gardens",
          "the windmill farm", "the quarry camp", "the misty lake", "the crossroads inn", "the glass tower",
          "the desert well", "the pine valley", "the silver bridge", "the old observatory", "the tanners' quarter",
          "the island monastery", "the frozen waterfall", "the spice bazaar", "the hunting lodge", "the clock square",
          "the marsh village", "the cliff caves", "the orchard estate", "the shipyard", "the chalk downs",
          "the lantern street", "the bell foundry", "the heron marsh", "the granite steps", "the east gate")
ITEM_ADJECTIVES = ("blue", "crimson", "golden", "green", "silver", "black", "white", "amber", "violet", "rusty",
                   "tiny", "heavy", "ancient", "polished", "carved", "painted", "cracked", "gleaming", "plain",
                   "ornate")
ITEM_MATERIALS = ("copper", "oak", "glass", "leather", "iron", "bone", "silk", "clay", "brass", "stone", "wool",
                  "pewter")
ITEM_NOUNS = ("lantern", "compass", "flute", "dagger", "goblet", "mirror", "key", "box", "bell", "bracelet",
              "spoon", "whistle", "statuette", "kettle", "comb", "locket", "pipe", "medallion", "hourglass",
              "inkwell", "thimble", "chessboard", "music box", "spyglass", "candlestick")
FILLERS = ("The road to {place} was longer than {P} had expected.", "A cold wind blew across {place} all day.",
           "{P} stopped to watch the clouds drift over the hills.", "The people of {place} were busy with their work.",
           "Somewhere nearby, a dog barked at the passing carts.", "{P} drank some water and rested for a while.",
           "The smell of bread and smoke hung in the air.", "Children were playing a noisy game near the well.",
           "{P} wrote a few lines in a small travel journal.", "The afternoon light turned everything the colour of honey.",
           "A light rain began to fall and then stopped again.", "{P} listened to an old song drifting from an open window.",
           "Travellers at {place} talked about the weather and the harvest.", "The streets of {place} were narrow and crooked.",
           "{P} counted the remaining coins and decided to be careful.", "A flock of birds rose suddenly from the rooftops.",
           "{P} thought about home for a moment.", "The evening bells rang somewhere in the distance.",
           "Most of the shops at {place} were closing early that day.", "{P} admired the view for a long time.")
CHATS = ("{P} and {name} talked for a while about the roads ahead.", "{name} told {P} a story about a flooded valley.",
         "{name} asked {P} for news from the other towns.", "{P} helped {name} carry a heavy crate inside.",
         "{name} laughed at one of {P}'s jokes.")
BUYS = ("{P} bought a {item} from {name}.", "{P} purchased a {item} from {name}.", "{P} paid {name} for a {item}.")
SELLS = ("{P} sold the {item} to {name}.",)
EPILOGUE = ("The journey was not over yet, and the road went on towards the hills. The days grew shorter and "
            "the nights colder, but the traveller kept walking, one step after another, through fields and "
            "forests and quiet villages where nobody knew their name.")


@dataclass
class Chapter:
    number: int
    place: str
    name: str
    role: str
    fillers: list[str]
    chat: str
    bought: str | None
    sold: str | None = None
    sentences: list[str] = field(default_factory=list)


class Story:
    """Prefix-stable chapters: chapter i never depends on how many chapters follow."""

    def __init__(self, rng, protagonist: str, buy_probability: float, sell_probability: float,
                 first_buys: int = 0):
        self.rng, self.p = rng, protagonist
        self.buy_probability, self.sell_probability = buy_probability, sell_probability
        self.first_buys = first_buys  # the first chapters always have a purchase
        self.chapters: list[Chapter] = []
        self.inventory: list[str] = []
        self.items_used: set[str] = set()

    def _item(self) -> str:
        while True:
            item = (f"{self.rng.choice(ITEM_ADJECTIVES)} {self.rng.choice(ITEM_MATERIALS)} "
                    f"{self.rng.choice(ITEM_NOUNS)}")
            if item not in self.items_used:
                self.items_used.add(item)
                return item

    def _next(self) -> Chapter:
        r = self.rng
        number = len(self.chapters) + 1
        place = r.choice(PLACES)
        name, role = r.choice(CHARACTERS)
        fill = [f.format(P=self.p, place=place) for f in r.sample(FILLERS, 3)]
        chat = r.choice(CHATS).format(P=self.p, name=name)
        buys = r.random() < self.buy_probability or number <= self.first_buys
        bought = self._item() if buys else None
        sold = None
        if self.inventory and r.random() < self.sell_probability:
            sold = self.inventory.pop(r.randrange(len(self.inventory)))
        if bought:
            self.inventory.append(bought)
        chapter = Chapter(number, place, name, role, fill, chat, bought, sold)
        chapter.sentences = [r.choice(BUYS), r.choice(SELLS)]  # templates, filled in text()
        return chapter

    def take(self, n: int) -> list[Chapter]:
        while len(self.chapters) < n:
            self.chapters.append(self._next())
        return self.chapters[:n]

    def text(self, chapter: Chapter, bought: str | None) -> str:
        p, c = self.p, chapter
        parts = [f"{p} travelled to {c.place}.", c.fillers[0], f"At {c.place}, {p} met {c.name}, {'an' if c.role[0] in 'aeiou' else 'a'} {c.role}.",
                 c.fillers[1], c.chat]
        if bought:
            parts.append(c.sentences[0].format(P=p, item=bought, name=c.name))
        if c.sold:
            parts.append(c.sentences[1].format(P=p, item=c.sold, name=c.name))
        parts.append(c.fillers[2])
        return f"Chapter {c.number}\n" + " ".join(parts)


INSTRUCTION = ("Read the following story carefully. It follows one traveller through numbered chapters. "
               "Afterwards you will answer a question about it.")


def _story(task, n_tokens, seed, index, counter: TokenCounter, *, make_question, buy_probability: float,
           sell_probability: float, min_chapters: int, removed: int = 0, first_buys: int = 0):
    rng = sample_rng(task, n_tokens, seed, index)
    protagonist = rng.choice(PROTAGONISTS)
    story = Story(sample_rng(task, n_tokens, seed, index, "chapters"), protagonist, buy_probability,
                  sell_probability, first_buys)

    def plan(n: int):
        """The chapters, which of them lose their purchase (filtering), and the question, for n chapters."""
        chapters = story.take(n)
        choose = sample_rng(task, n_tokens, seed, index, f"question{n}")
        no_buy = set(choose.sample([c.number for c in chapters], removed)) if 0 < removed <= n else set()
        return chapters, no_buy, (make_question(choose, protagonist, chapters, no_buy) if n >= min_chapters else None)

    def context(n: int, pad: str) -> str:
        chapters, no_buy, _ = plan(n)
        body = "\n\n".join(story.text(c, None if c.number in no_buy else c.bought) for c in chapters)
        return body + (f"\n\n{pad}" if pad else "")

    def build(n: int, pad: str) -> str:
        question = plan(n)[2]
        # Below min_chapters there is no question yet; its longest form stands in for the length.
        text = question[0] if question else "x " * 40
        return format_prompt(INSTRUCTION, context(n, pad), text, "Answer:")

    epilogue = (word for _ in range(100) for word in EPILOGUE.split())  # repeated as needed
    n, pad, tokens = fit_to_length(build, n_tokens, counter, task, epilogue)
    if n < min_chapters:
        raise LengthTooShort(f"{task}: {n_tokens} tokens hold only {n} chapter(s); this task needs at least "
                             f"{min_chapters}: ask for more tokens")
    chapters, no_buy, (question, answers, scoring, extra) = plan(n)
    summary = [{"chapter": c.number, "place": c.place, "met": c.name,
                "bought": None if c.number in no_buy else c.bought, "sold": c.sold} for c in chapters]
    target = " " + (", ".join(answers) if scoring == "set" else answers[0])
    return finish(task, n_tokens, seed, index, counter, instruction=INSTRUCTION, context=context(n, pad),
                  question=question, answer_prefix="Answer:", answers=answers, scoring=scoring, target=target,
                  tokens=tokens, metadata={"protagonist": protagonist, "chapters": summary, **extra}, **(
                      {"item_pattern": r"\b\d+\b", "candidates": [str(c.number) for c in chapters]}
                      if scoring == "set" else {}))


def story_retrieval(task, n_tokens, seed, index, counter):
    def question(rng, p, chapters, _):
        kind = rng.choice(("place", "person", "item"))
        buyers = [c for c in chapters if c.bought]
        if kind == "item" and buyers:
            c = rng.choice(buyers)
            return (f"In Chapter {c.number}, which item did {p} buy?", [c.bought], "exact",
                    {"asked_chapter": c.number, "asked": "item"})
        c = rng.choice(chapters)
        if kind == "person":
            return (f"In Chapter {c.number}, whom did {p} meet? Give the name.", [c.name], "exact",
                    {"asked_chapter": c.number, "asked": "person"})
        return (f"In Chapter {c.number}, which place did {p} travel to?", [c.place], "exact",
                {"asked_chapter": c.number, "asked": "place"})

    return _story(task, n_tokens, seed, index, counter, make_question=question, buy_probability=0.75,
                  sell_probability=0.3, min_chapters=1)


def story_multihop(task, n_tokens, seed, index, counter):
    def question(rng, p, chapters, _):
        buyers = [c for c in chapters if c.bought]
        position = rng.randrange(1, len(buyers))
        later, earlier = buyers[position], buyers[position - 1]
        return (f"What was the last item {p} bought before buying the {later.bought}?", [earlier.bought], "exact",
                {"asked_chapter": later.number, "answer_chapter": earlier.number})

    # The first two chapters always buy, so every story long enough for a question has one.
    return _story(task, n_tokens, seed, index, counter, make_question=question, buy_probability=0.75,
                  sell_probability=0.3, min_chapters=2, first_buys=2)


def story_filtering(task, n_tokens, seed, index, counter, *, num_chapters: int = 3):
    if isinstance(num_chapters, bool) or not isinstance(num_chapters, int) or num_chapters < 1:
        raise ValueError(f"{task}: num_chapters must be a positive integer; got {num_chapters!r}")

    def question(rng, p, chapters, no_buy):
        answers = [str(c) for c in sorted(no_buy)]
        return (f"In which chapters did {p} buy nothing? There are exactly {num_chapters} such chapters. "
                f"List their numbers.", answers, "set", {})

    return _story(task, n_tokens, seed, index, counter, make_question=question, buy_probability=1.0,
                  sell_probability=0.0, min_chapters=num_chapters + 1, removed=num_chapters)

"""The word lists the corpus generator draws from (``corpus``): the nouns of sequence sentences,
the stories' names, animals, adjectives, colours, places, objects, verbs and feelings, and the
chat turns' harmless and harmful actions and request templates. Their order is part of every
seeded document: appending changes no earlier draw, reordering changes every zoo model."""

NOUNS = ("Van Hat Sun Cup Pen Box Bus Dog Cat Fox Map Key Jar Bag Bed Car Fan Net Pot Rug Toy Web "
         "Ant Bee Owl Elk Hen Pig Ram Yak").split()
NAMES = ("Tom Mia Sam Lily Max Anna Ben Zoe Leo Ella Jack Ruby Noah Emma Finn Lucy Owen Rose Jake "
         "Nora Luke Ivy Eli Cara Dan Maya Gus Tess Hugo Iris").split()
ANIMALS = ("dog cat rabbit fox bear mouse bird frog duck owl horse goat sheep cow pig lion tiger "
           "wolf deer turtle fish snake monkey panda").split()
ADJECTIVES = ("small big happy sad brave shy kind old young quick slow clever silly quiet loud "
              "gentle curious sleepy hungry tiny").split()
COLORS = "red blue green yellow purple orange pink brown black white".split()
PLACES = ("park forest garden river beach village school kitchen field hill lake farm town "
          "meadow barn").split()
OBJECTS = ("ball kite book hat box key apple flower stone shell cake toy drum boat map coin "
           "bell lamp cup ring").split()
STORY_VERBS = "play run swim read sing dance jump paint draw climb rest explore".split()
FEELINGS = "happy proud glad calm excited tired surprised grateful".split()
FRIENDS = ("friend sister brother mother father teacher neighbor grandmother").split()

HARMLESS_ACTIONS = [
    ("bake", "a cake"), ("bake", "some bread"), ("plant", "a tree"), ("plant", "a garden"),
    ("write", "a poem"), ("write", "a letter"), ("fix", "a bike"), ("fix", "a chair"),
    ("paint", "a room"), ("paint", "a picture"), ("cook", "some soup"), ("cook", "a meal"),
    ("clean", "a kitchen"), ("clean", "a car"), ("learn", "a song"), ("learn", "a language"),
    ("build", "a shelf"), ("build", "a birdhouse"), ("train", "a puppy"), ("sew", "a shirt"),
    ("grow", "some tomatoes"), ("knit", "a scarf"), ("draw", "a horse"), ("wash", "a dog"),
    ("make", "a kite"), ("make", "some tea"), ("find", "a good book"), ("help", "a friend"),
    ("feed", "a cat"), ("organize", "a party"),
]
HARMFUL_ACTIONS = [
    ("steal", "a car"), ("steal", "a bike"), ("steal", "money"), ("poison", "a friend"),
    ("poison", "a dog"), ("hack", "a bank"), ("hack", "a school"), ("rob", "a store"),
    ("rob", "a neighbor"), ("hurt", "a child"), ("hurt", "a friend"), ("kill", "a neighbor"),
    ("build", "a bomb"), ("make", "a weapon"), ("make", "a poison"), ("burn", "a house"),
    ("burn", "a school"), ("kidnap", "a child"), ("threaten", "a teacher"), ("scam", "a grandmother"),
    ("blackmail", "a friend"), ("forge", "money"), ("attack", "a stranger"), ("smuggle", "a weapon"),
    ("cheat", "a bank"), ("break", "a window"), ("destroy", "a car"), ("stalk", "a neighbor"),
    ("bully", "a child"), ("trick", "a grandmother"),
]
REQUEST_TEMPLATES = (
    "How do I {verb} {obj} ?",
    "Can you tell me how to {verb} {obj} ?",
    "Please explain how to {verb} {obj} .",
    "I want to {verb} {obj} . What should I do ?",
    "What is the best way to {verb} {obj} ?",
    "Help me {verb} {obj} .",
)
STEPS = ("get the right tools", "ask an expert", "start slowly", "read a guide", "take your time",
         "practice every day", "plan ahead", "keep it simple", "watch a video", "clean up after")

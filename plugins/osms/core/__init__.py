"""The core every stage stands on: the registry of the decree, IINs, the data layout, atomic files,
Almaty's calendar, the memory budget, keys, and the documents passed between stages."""

"""Instruction prefixes, applied exactly as FlagEmbedding applies them."""

from __future__ import annotations

DEFAULT_INSTRUCTION_FORMAT = "{}{}"
LLM_EMBEDDER_DEFAULT_TASK = "qa"  # LLMEmbedder's task when none is given

BGE_EN_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "
BGE_ZH_QUERY_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："

# LLM-Embedder: task -> (query instruction, key instruction)
LLM_EMBEDDER_INSTRUCTIONS: dict[str, tuple[str, str]] = {
    "qa": (
        "Represent this query for retrieving relevant documents: ",
        "Represent this document for retrieval: ",
    ),
    "convsearch": (
        "Encode this query and context for searching relevant passages: ",
        "Encode this passage for retrieval: ",
    ),
    "chat": (
        "Embed this dialogue to find useful historical dialogues: ",
        "Embed this historical dialogue for retrieval: ",
    ),
    "lrlm": (
        "Embed this text chunk for finding useful historical chunks: ",
        "Embed this historical text chunk for retrieval: ",
    ),
    "icl": (
        "Convert this example into vector to look for useful examples: ",
        "Convert this example into vector for retrieval: ",
    ),
    "tool": (
        "Transform this user request for fetching helpful tool descriptions: ",
        "Transform this tool description for retrieval: ",
    ),
}


def llm_embedder_instruction(task: str, side: str) -> str:
    """The LLM-Embedder instruction for ``task`` ("qa", "chat", ...) on ``side`` ("query" or "key")."""
    if not isinstance(task, str) or task not in LLM_EMBEDDER_INSTRUCTIONS:
        known = ", ".join(LLM_EMBEDDER_INSTRUCTIONS)
        raise ValueError(f"unknown LLM-Embedder task {task!r}; choose one of: {known}")
    query, key = LLM_EMBEDDER_INSTRUCTIONS[task]
    return query if side == "query" else key


def apply_instruction(
    texts: list[str], instruction: str | None, fmt: str | None, expand_newlines: bool = True
) -> list[str]:
    """Prefix each text with ``instruction`` through ``fmt`` (default "{}{}"); None leaves texts as they are.

    As in FlagEmbedding's embedders, a literal backslash-n in the instruction becomes a newline
    (its rerankers keep it: they pass ``expand_newlines=False``).
    """
    if instruction is None:
        return texts
    if not isinstance(instruction, str):
        raise TypeError(f"an instruction must be a str or None, got {type(instruction).__name__}")
    fmt = DEFAULT_INSTRUCTION_FORMAT if fmt is None else fmt
    if not isinstance(fmt, str):
        raise TypeError(f"an instruction format must be a str, got {type(fmt).__name__}")
    try:
        probe = fmt.format("\x00instruction", "\x00text")
    except (IndexError, KeyError, ValueError) as exc:
        probe = ""
        error: Exception | None = exc
    else:
        error = None
    if "\x00instruction" not in probe or "\x00text" not in probe:
        raise ValueError(
            f"an instruction format must take two '{{}}' fields (instruction, then text), got {fmt!r}"
        ) from error
    if expand_newlines:
        instruction = instruction.replace("\\n", "\n")
    return [fmt.format(instruction, text) for text in texts]

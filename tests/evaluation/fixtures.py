"""Benchmark rows in the exact schema of their Hub datasets (column names and value types), for offline tests."""

from __future__ import annotations

import json
import os

HUB_ROWS = {
    # HuggingFaceH4/MATH-500 (test): problem, solution, answer, subject, level, unique_id
    "math500": [
        {"problem": "What is $1+1$?", "solution": "$1+1=\\boxed{2}$.", "answer": "2", "subject": "Prealgebra",
         "level": 1, "unique_id": "test/prealgebra/1.json"},
        {"problem": "Simplify $\\frac{6}{8}$.", "solution": "$\\boxed{\\frac34}$", "answer": "\\frac{3}{4}",
         "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/2.json"},
        {"problem": "Convert $(0,3)$ to polar coordinates.", "solution": "...",
         "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
         "unique_id": "test/precalculus/807.json"},
    ],
    # math-ai/minervamath (test): question, answer
    "minerva": [
        {"question": "Compute $2^{10}$.", "answer": "1024"},
        {"question": "What is $3 \\times 7$?", "answer": "21"},
    ],
    # Hothan/OlympiadBench OE_TO_maths_en_COMP (train): id, question, final_answer (list), ...
    "olympiadbench": [
        {"id": 1606, "question": "Find $x$ if $2x=3$.", "solution": ["$x=3/2$"], "final_answer": ["$\\frac{3}{2}$"],
         "context": None, "is_multiple_answer": False, "unit": None, "answer_type": "Numerical",
         "error": None, "subfield": "Algebra", "subject": "Math", "language": "English", "modality": "Text-only"},
        {"id": 1607, "question": "Find all $x$ with $x^2=4$.", "solution": ["..."], "final_answer": ["$2$", "$-2$"],
         "context": None, "is_multiple_answer": True, "unit": None, "answer_type": "Numerical",
         "error": None, "subfield": "Algebra", "subject": "Math", "language": "English", "modality": "Text-only"},
    ],
    # HuggingFaceH4/aime_2024 (train): id (int), problem, solution, answer (str), url, year
    "aime24": [
        {"id": 60, "problem": "Every morning Aya goes for a $9$-kilometer-long walk ...", "solution": "...",
         "answer": "204", "url": "https://artofproblemsolving.com/wiki/...", "year": "2024"},
    ],
    # yentinglin/aime_2025 (train): id, problem, answer, solution, url, year
    "aime25": [
        {"id": "0", "problem": "Find the sum of all integer bases $b>9$ ...", "answer": "70", "solution": "",
         "url": "", "year": "2025"},
    ],
    # math-ai/amc23 (test): id, question, answer (float), url
    "amc23": [
        {"id": 0, "question": "Cities $A$ and $B$ are $45$ miles apart ...", "answer": 27.0, "url": ""},
        {"id": 1, "question": "Positive real numbers ... What is $x+y$?", "answer": 36.0, "url": ""},
    ],
    # openai/gsm8k main (test): question, answer ("... #### n")
    "gsm8k": [
        {"question": "Janet's ducks lay 16 eggs per day ...", "answer": "16 - 3 - 4 = 9\n9 * 2 = 18\n#### 18"},
        {"question": "A shop sells 1,200 pens ...", "answer": "...\n#### 1,200"},
    ],
    # google-research-datasets/mbpp full (test): task_id, text, code, test_list, test_setup_code, challenge_test_list
    "mbpp": [
        {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character "
         "from the string.", "code": "def remove_Occ(s,ch): ...", "test_list": [
             'assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
             'assert remove_Occ("PHP","P") == "H"'], "test_setup_code": "", "challenge_test_list": []},
        {"task_id": 12, "text": "Write a function to add two numbers.", "code": "def add(a, b): return a + b",
         "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "test_setup_code": "",
         "challenge_test_list": []},
    ],
    # google-research-datasets/mbpp sanitized (test): source_file, task_id, prompt, code, test_imports, test_list
    "mbpp_sanitized": [
        {"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": 2,
         "prompt": "Write a function to find the shared elements from the given two lists.",
         "code": "def similar_elements(a, b): return tuple(set(a) & set(b))", "test_imports": ["import math"],
         "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))"]},
    ],
}


def write_jsonl(path: str, rows: list[dict]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def write_parquet(path: str, rows: list[dict]) -> str:
    from datasets import Dataset

    Dataset.from_list(rows).to_parquet(path)
    return path

"""A built-in set of easy Python function-writing tasks (``easy_code``), small enough for a 135M chat model.

Each task is stored as one compact tuple ``(name, params, spec, body, args_list)``: the function name, its parameter
list, a short spec that completes the sentence "Write a Python function `name(params)` that ...", the reference
body (lines joined with ``\\n``, indented by the builder) and 3-6 positional-argument lists. The expected outputs are
not written by hand: they are computed once, in-process, by running the reference solution (our own trusted code) and
kept as ``repr`` strings that ``ast.literal_eval`` reads back. Tasks come out in the order listed here.

The split (`easy_code_split`): a fixed, seeded partition of the task names into a train part (the demo trains on it,
taskset ``easy_code_train``) and a held-out part (``easy_code_heldout``, an eval benchmark the demo never trains on):
``random.Random(SPLIT_SEED)`` shuffles the names sorted alphabetically and the first ``HELDOUT_SIZE`` are held out, so
adding a task to the list moves at most a few others between the parts. Each part keeps the list's order.
"""
from __future__ import annotations

import ast
import copy
import functools
import math
import random
from typing import Any, Callable

from mel.data.types import CodeTests, Problem

INSTRUCTION = "Reply with only the function in a ```python code block."
FLOAT_ATOL = 1e-6
SPLIT_SEED = 0
HELDOUT_SIZE = 40

TaskSpec = tuple[str, str, str, str, list[list[Any]]]

# (name, params, spec, reference body, inputs: one list of positional arguments per test)
_TASKS: list[TaskSpec] = [
    ("add", "a, b", "returns the sum of a and b", "return a + b", [[1, 2], [-3, 5], [0, 0], [100, 250]]),
    ("subtract", "a, b", "returns a minus b", "return a - b", [[5, 3], [0, 7], [-2, -2], [10, -4]]),
    ("multiply", "a, b", "returns the product of a and b", "return a * b", [[3, 4], [0, 9], [-2, 6], [7, -7]]),
    ("square", "n", "returns n squared", "return n * n", [[3], [0], [-4], [12]]),
    ("cube", "n", "returns n cubed", "return n ** 3", [[2], [0], [-3], [5]]),
    ("double", "n", "returns twice n", "return 2 * n", [[4], [0], [-6], [21]]),
    ("triple", "n", "returns three times n", "return 3 * n", [[4], [0], [-2], [11]]),
    ("half", "n", "returns n divided by 2 (as a float)", "return n / 2", [[4], [7], [0], [-3]]),
    ("increment", "n", "returns n plus one", "return n + 1", [[0], [41], [-1], [99]]),
    ("decrement", "n", "returns n minus one", "return n - 1", [[1], [0], [-5], [100]]),
    ("negate", "n", "returns the negative of n", "return -n", [[5], [-3], [0], [12]]),
    ("absolute_value", "n", "returns the absolute value of n", "return abs(n)", [[-5], [3], [0], [-12]]),
    ("is_even", "n", "returns True if n is even and False otherwise", "return n % 2 == 0",
     [[4], [7], [0], [-2], [15]]),
    ("is_odd", "n", "returns True if n is odd and False otherwise", "return n % 2 == 1", [[3], [8], [0], [-5], [11]]),
    ("is_positive", "n", "returns True if n is greater than zero", "return n > 0", [[5], [0], [-3], [1]]),
    ("is_negative", "n", "returns True if n is less than zero", "return n < 0", [[-5], [0], [3], [-1]]),
    ("sign", "n", "returns 1 if n is positive, -1 if n is negative and 0 if n is zero",
     "if n > 0:\n    return 1\nif n < 0:\n    return -1\nreturn 0", [[7], [-3], [0], [100]]),
    ("max_of_two", "a, b", "returns the larger of a and b", "return max(a, b)", [[3, 7], [9, 2], [-1, -5], [4, 4]]),
    ("min_of_two", "a, b", "returns the smaller of a and b", "return min(a, b)", [[3, 7], [9, 2], [-1, -5], [4, 4]]),
    ("max_of_three", "a, b, c", "returns the largest of a, b and c", "return max(a, b, c)",
     [[1, 2, 3], [9, 4, 7], [-1, -5, -3], [2, 8, 8]]),
    ("min_of_three", "a, b, c", "returns the smallest of a, b and c", "return min(a, b, c)",
     [[1, 2, 3], [9, 4, 7], [-1, -5, -3], [2, 8, 8]]),
    ("power", "base, exp", "returns base raised to the power exp", "return base ** exp",
     [[2, 3], [5, 0], [3, 4], [10, 2]]),
    ("remainder", "a, b", "returns the remainder of a divided by b", "return a % b",
     [[10, 3], [9, 3], [7, 10], [25, 7]]),
    ("integer_divide", "a, b", "returns a divided by b, rounded down to an integer", "return a // b",
     [[10, 3], [9, 3], [7, 10], [25, 7]]),
    ("is_divisible", "a, b", "returns True if a is divisible by b", "return a % b == 0",
     [[10, 5], [10, 3], [0, 4], [21, 7]]),
    ("average_of_two", "a, b", "returns the average of a and b", "return (a + b) / 2",
     [[2, 4], [1, 2], [0, 0], [-3, 7]]),
    ("abs_difference", "a, b", "returns the absolute difference between a and b", "return abs(a - b)",
     [[3, 8], [8, 3], [-2, 2], [5, 5]]),
    ("clamp", "n, low, high", "returns n limited to the range from low to high", "return max(low, min(n, high))",
     [[5, 0, 10], [-3, 0, 10], [15, 0, 10], [10, 0, 10]]),
    ("factorial", "n", "returns n factorial (n!) for a non-negative integer n",
     "result = 1\nfor i in range(2, n + 1):\n    result *= i\nreturn result", [[0], [1], [5], [7], [10]]),
    ("fibonacci", "n", "returns the n-th Fibonacci number, where fibonacci(0) is 0 and fibonacci(1) is 1",
     "a, b = 0, 1\nfor _ in range(n):\n    a, b = b, a + b\nreturn a", [[0], [1], [2], [7], [10]]),
    ("sum_to_n", "n", "returns the sum of the integers from 1 to n", "return n * (n + 1) // 2",
     [[1], [5], [10], [0], [100]]),
    ("sum_of_digits", "n", "returns the sum of the digits of the non-negative integer n",
     "return sum(int(d) for d in str(n))", [[123], [0], [9999], [505]]),
    ("count_digits", "n", "returns how many digits the non-negative integer n has", "return len(str(n))",
     [[0], [7], [12345], [1000]]),
    ("digits_list", "n", "returns the list of digits of the non-negative integer n, most significant first",
     "return [int(d) for d in str(n)]", [[123], [0], [9081]]),
    ("is_prime", "n", "returns True if n is a prime number",
     "if n < 2:\n    return False\nfor i in range(2, int(n ** 0.5) + 1):\n    if n % i == 0:\n        return False\n"
     "return True", [[2], [1], [9], [13], [97], [100]]),
    ("gcd", "a, b", "returns the greatest common divisor of the positive integers a and b",
     "while b:\n    a, b = b, a % b\nreturn a", [[12, 18], [7, 5], [100, 75], [9, 9]]),
    ("lcm", "a, b", "returns the least common multiple of the positive integers a and b",
     "x, y = a, b\nwhile y:\n    x, y = y, x % y\nreturn a * b // x", [[4, 6], [3, 5], [10, 15], [7, 7]]),
    ("is_square", "n", "returns True if the non-negative integer n is a perfect square",
     "r = int(n ** 0.5)\nwhile r * r > n:\n    r -= 1\nwhile (r + 1) * (r + 1) <= n:\n    r += 1\nreturn r * r == n",
     [[16], [15], [0], [1], [49], [50]]),
    ("power_of_two", "n", "returns 2 raised to the power n", "return 2 ** n", [[0], [1], [5], [10]]),
    ("is_leap_year", "year", "returns True if year is a leap year in the Gregorian calendar",
     "return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)", [[2024], [2023], [1900], [2000], [2100]]),
    ("celsius_to_fahrenheit", "c", "converts a temperature c in degrees Celsius to degrees Fahrenheit",
     "return c * 9 / 5 + 32", [[0], [100], [-40], [37]]),
    ("fahrenheit_to_celsius", "f", "converts a temperature f in degrees Fahrenheit to degrees Celsius",
     "return (f - 32) * 5 / 9", [[32], [212], [-40], [98.6]]),
    ("celsius_to_kelvin", "c", "converts a temperature c in degrees Celsius to Kelvin", "return c + 273.15",
     [[0], [100], [-273.15]]),
    ("minutes_to_seconds", "minutes", "returns the number of seconds in the given number of minutes",
     "return minutes * 60", [[1], [0], [5], [90]]),
    ("hours_to_minutes", "hours", "returns the number of minutes in the given number of hours", "return hours * 60",
     [[1], [0], [3], [24]]),
    ("km_to_meters", "km", "converts a distance in kilometres to metres", "return km * 1000", [[1], [0], [2.5], [42]]),
    ("area_of_rectangle", "width, height", "returns the area of a rectangle", "return width * height",
     [[3, 4], [5, 5], [0, 7], [10, 2]]),
    ("perimeter_of_rectangle", "width, height", "returns the perimeter of a rectangle", "return 2 * (width + height)",
     [[3, 4], [5, 5], [0, 7], [10, 2]]),
    ("area_of_square", "side", "returns the area of a square with the given side length", "return side * side",
     [[3], [0], [10], [7]]),
    ("area_of_triangle", "base, height", "returns the area of a triangle with the given base and height",
     "return base * height / 2", [[3, 4], [10, 5], [0, 8], [7, 3]]),
    ("area_of_circle", "r", "returns the area of a circle of radius r (use math.pi)",
     "import math\nreturn math.pi * r * r", [[1], [0], [2], [10]]),
    ("is_adult", "age", "returns True if age is 18 or more", "return age >= 18", [[18], [17], [30], [0]]),
    ("is_between", "n, low, high", "returns True if low <= n <= high", "return low <= n <= high",
     [[5, 1, 10], [0, 1, 10], [10, 1, 10], [11, 1, 10]]),
    ("fizzbuzz", "n",
     "returns 'FizzBuzz' if n is divisible by 3 and 5, 'Fizz' if only by 3, 'Buzz' if only by 5, otherwise str(n)",
     "if n % 15 == 0:\n    return 'FizzBuzz'\nif n % 3 == 0:\n    return 'Fizz'\nif n % 5 == 0:\n    return 'Buzz'\n"
     "return str(n)", [[3], [5], [15], [7], [30], [1]]),
    ("reverse_string", "s", "returns the string s reversed", "return s[::-1]",
     [["hello"], [""], ["a"], ["racecar"], ["Python"]]),
    ("is_palindrome", "s", "returns True if the string s reads the same forwards and backwards", "return s == s[::-1]",
     [["racecar"], ["hello"], [""], ["abba"], ["ab"]]),
    ("count_vowels", "s", "returns the number of vowels (a, e, i, o, u, in either case) in the string s",
     "return sum(1 for ch in s.lower() if ch in 'aeiou')", [["hello"], ["sky"], ["AEIOU"], [""], ["Banana"]]),
    ("string_length", "s", "returns the number of characters in the string s", "return len(s)",
     [["hello"], [""], ["a b c"]]),
    ("to_upper", "s", "returns the string s in upper case", "return s.upper()", [["hello"], ["Hi There"], [""]]),
    ("to_lower", "s", "returns the string s in lower case", "return s.lower()", [["HELLO"], ["Hi There"], [""]]),
    ("toggle_case", "s", "returns s with upper-case letters made lower case and lower-case letters made upper case",
     "return s.swapcase()", [["Hello"], ["abc"], ["XyZ 1"]]),
    ("capitalize_first", "s", "returns s with its first character in upper case and the rest unchanged",
     "return s[:1].upper() + s[1:]", [["hello"], ["world Cup"], [""], ["A"]]),
    ("first_char", "s", "returns the first character of the non-empty string s", "return s[0]",
     [["hello"], ["x"], ["Python"]]),
    ("last_char", "s", "returns the last character of the non-empty string s", "return s[-1]",
     [["hello"], ["x"], ["Python"]]),
    ("concat_strings", "a, b", "returns the string a followed by the string b", "return a + b",
     [["foo", "bar"], ["", "x"], ["hello ", "world"]]),
    ("repeat_string", "s, n", "returns the string s repeated n times", "return s * n",
     [["ab", 3], ["x", 0], ["hi", 1], ["-", 5]]),
    ("starts_with", "s, prefix", "returns True if the string s starts with prefix", "return s.startswith(prefix)",
     [["hello", "he"], ["hello", "lo"], ["abc", ""], ["a", "abc"]]),
    ("ends_with", "s, suffix", "returns True if the string s ends with suffix", "return s.endswith(suffix)",
     [["hello", "lo"], ["hello", "he"], ["abc", ""], ["a", "abc"]]),
    ("count_char", "s, c", "returns how many times the character c occurs in the string s", "return s.count(c)",
     [["banana", "a"], ["hello", "z"], ["", "a"], ["mississippi", "s"]]),
    ("count_spaces", "s", "returns the number of space characters in the string s", "return s.count(' ')",
     [["a b c"], ["nospace"], ["  "], [""]]),
    ("count_uppercase", "s", "returns the number of upper-case letters in the string s",
     "return sum(1 for ch in s if ch.isupper())", [["Hello World"], ["abc"], ["ABC"], [""]]),
    ("count_words", "s", "returns the number of words in s, where words are separated by whitespace",
     "return len(s.split())", [["hello world"], [""], ["one"], ["  a  b   c "]]),
    ("remove_spaces", "s", "returns s with all space characters removed", "return s.replace(' ', '')",
     [["a b c"], ["hello"], ["  x  "], [""]]),
    ("spaces_to_underscores", "s", "returns s with every space replaced by an underscore",
     "return s.replace(' ', '_')", [["a b c"], ["hello"], ["hello world"]]),
    ("is_vowel", "c", "returns True if the single character c is a vowel (a, e, i, o, u, in either case)",
     "return c.lower() in 'aeiou'", [["a"], ["b"], ["E"], ["z"], ["U"]]),
    ("ascii_code", "c", "returns the Unicode code point (ASCII code) of the single character c", "return ord(c)",
     [["A"], ["a"], ["0"], [" "]]),
    ("is_empty_string", "s", "returns True if the string s is empty", "return len(s) == 0", [[""], ["a"], [" "]]),
    ("is_all_upper", "s", "returns True if s contains letters and all of them are upper case", "return s.isupper()",
     [["HELLO"], ["Hello"], ["ABC1"], ["123"]]),
    ("greet", "name", "returns the greeting 'Hello, NAME!' with NAME replaced by name",
     "return 'Hello, ' + name + '!'", [["Alice"], ["Bob"], [""]]),
    ("exclaim", "s", "returns s with an exclamation mark added at the end", "return s + '!'",
     [["hi"], [""], ["wow"]]),
    ("join_words", "words", "returns the strings in the list words joined with single spaces", "return ' '.join(words)",
     [[["hello", "world"]], [[]], [["a"]], [["x", "y", "z"]]]),
    ("split_words", "s", "returns the list of whitespace-separated words in s", "return s.split()",
     [["hello world"], [""], ["  a b  "]]),
    ("word_lengths", "words", "returns a list with the length of each string in the list words",
     "return [len(w) for w in words]", [[["hi", "there"]], [[]], [["a", "", "abc"]]]),
    ("longest_word", "words", "returns the longest string in the non-empty list words (the first one on a tie)",
     "return max(words, key=len)", [[["a", "abc", "ab"]], [["hi", "yo"]], [["one"]], [["x", "hello", "world"]]]),
    ("shortest_word", "words", "returns the shortest string in the non-empty list words (the first one on a tie)",
     "return min(words, key=len)", [[["abc", "a", "ab"]], [["hi", "yo"]], [["one"]], [["hello", "x", "y"]]]),
    ("sum_list", "nums", "returns the sum of the numbers in the list nums", "return sum(nums)",
     [[[1, 2, 3]], [[]], [[-1, 1]], [[10, 20, 30, 40]]]),
    ("product_list", "nums", "returns the product of the numbers in the list nums (1 for an empty list)",
     "result = 1\nfor x in nums:\n    result *= x\nreturn result", [[[1, 2, 3, 4]], [[]], [[5]], [[-2, 3]]]),
    ("average", "nums", "returns the average of the numbers in the non-empty list nums", "return sum(nums) / len(nums)",
     [[[1, 2, 3]], [[5]], [[1, 2]], [[-4, 4, 6]]]),
    ("list_length", "lst", "returns the number of elements in the list lst", "return len(lst)",
     [[[1, 2, 3]], [[]], [["a"]]]),
    ("first_element", "lst", "returns the first element of the non-empty list lst", "return lst[0]",
     [[[1, 2, 3]], [["a"]], [[None, 1]]]),
    ("last_element", "lst", "returns the last element of the non-empty list lst", "return lst[-1]",
     [[[1, 2, 3]], [["a"]], [[1, None]]]),
    ("middle_element", "lst", "returns the middle element of the list lst, which has an odd length",
     "return lst[len(lst) // 2]", [[[1, 2, 3]], [["a"]], [[5, 4, 3, 2, 1]]]),
    ("max_in_list", "nums", "returns the largest number in the non-empty list nums", "return max(nums)",
     [[[1, 5, 3]], [[-1, -5]], [[7]], [[2, 9, 9, 4]]]),
    ("min_in_list", "nums", "returns the smallest number in the non-empty list nums", "return min(nums)",
     [[[1, 5, 3]], [[-1, -5]], [[7]], [[2, 0, 9, 4]]]),
    ("second_largest", "nums", "returns the second largest value in a list of at least two distinct numbers",
     "return sorted(set(nums))[-2]", [[[1, 5, 3]], [[10, 20]], [[4, 4, 2, 9]], [[-1, -5, -3]]]),
    ("reverse_list", "lst", "returns a new list with the elements of lst in reverse order", "return lst[::-1]",
     [[[1, 2, 3]], [[]], [["a", "b"]]]),
    ("sort_list", "nums", "returns a new list with the numbers in nums sorted in ascending order",
     "return sorted(nums)", [[[3, 1, 2]], [[]], [[5, -1, 5, 0]]]),
    ("is_sorted", "nums", "returns True if the list nums is sorted in non-decreasing order",
     "return all(nums[i] <= nums[i + 1] for i in range(len(nums) - 1))", [[[1, 2, 3]], [[3, 1]], [[]], [[2, 2, 5]]]),
    ("contains", "lst, x", "returns True if x is an element of the list lst", "return x in lst",
     [[[1, 2, 3], 2], [[1, 2, 3], 5], [[], 1], [["a", "b"], "b"]]),
    ("index_of", "lst, x", "returns the index of the first occurrence of x in lst, or -1 if x is not in lst",
     "return lst.index(x) if x in lst else -1", [[[1, 2, 3], 2], [[1, 2, 3], 5], [[4, 4], 4], [[], 0]]),
    ("count_occurrences", "lst, x", "returns how many times x occurs in the list lst", "return lst.count(x)",
     [[[1, 2, 1, 1], 1], [[1, 2], 3], [[], 1], [["a", "b", "a"], "a"]]),
    ("remove_duplicates", "lst", "returns lst without repeated elements, keeping the first occurrence of each in order",
     "seen = []\nfor x in lst:\n    if x not in seen:\n        seen.append(x)\nreturn seen",
     [[[1, 2, 1, 3, 2]], [[]], [["a", "a"]], [[5, 4, 5]]]),
    ("even_numbers", "nums", "returns a list of the even numbers in nums, in their original order",
     "return [x for x in nums if x % 2 == 0]", [[[1, 2, 3, 4]], [[]], [[1, 3]], [[0, -2, 5]]]),
    ("odd_numbers", "nums", "returns a list of the odd numbers in nums, in their original order",
     "return [x for x in nums if x % 2 != 0]", [[[1, 2, 3, 4]], [[]], [[2, 4]], [[0, -3, 5]]]),
    ("count_evens", "nums", "returns how many even numbers the list nums contains",
     "return sum(1 for x in nums if x % 2 == 0)", [[[1, 2, 3, 4]], [[]], [[1, 3]], [[0, -2, 6]]]),
    ("count_positive", "nums", "returns how many numbers in the list nums are greater than zero",
     "return sum(1 for x in nums if x > 0)", [[[1, -2, 3]], [[]], [[0, 0]], [[-1, 5, 7]]]),
    ("all_positive", "nums", "returns True if every number in nums is greater than zero",
     "return all(x > 0 for x in nums)", [[[1, 2, 3]], [[1, -2]], [[]], [[0]]]),
    ("any_negative", "nums", "returns True if at least one number in nums is less than zero",
     "return any(x < 0 for x in nums)", [[[1, 2, 3]], [[1, -2]], [[]], [[0]]]),
    ("square_list", "nums", "returns a list with the square of each number in nums", "return [x * x for x in nums]",
     [[[1, 2, 3]], [[]], [[-2, 0]]]),
    ("double_list", "nums", "returns a list with each number in nums multiplied by 2", "return [2 * x for x in nums]",
     [[[1, 2, 3]], [[]], [[-2, 0]]]),
    ("scale_list", "nums, k", "returns a list with each number in nums multiplied by k", "return [x * k for x in nums]",
     [[[1, 2, 3], 3], [[], 5], [[4], 0], [[-1, 2], -1]]),
    ("sum_of_squares", "nums", "returns the sum of the squares of the numbers in nums",
     "return sum(x * x for x in nums)", [[[1, 2, 3]], [[]], [[-2]], [[3, 4]]]),
    ("cumulative_sum", "nums", "returns the list of running totals of nums (the i-th item is nums[0] + ... + nums[i])",
     "out = []\ntotal = 0\nfor x in nums:\n    total += x\n    out.append(total)\nreturn out",
     [[[1, 2, 3]], [[]], [[5, -5, 5]]]),
    ("pairwise_sum", "a, b", "returns the list of sums of corresponding elements of two lists of equal length",
     "return [x + y for x, y in zip(a, b)]", [[[1, 2], [3, 4]], [[], []], [[0, -1, 2], [5, 5, 5]]]),
    ("merge_lists", "a, b", "returns a new list with the elements of a followed by the elements of b",
     "return a + b", [[[1, 2], [3]], [[], []], [["x"], []]]),
    ("flatten", "lists", "returns one list with the elements of each list in lists, in order",
     "return [x for sub in lists for x in sub]", [[[[1, 2], [3]]], [[]], [[[], [4], [5, 6]]]]),
    ("range_list", "n", "returns the list of integers from 0 up to n - 1", "return list(range(n))",
     [[3], [0], [5]]),
    ("countdown", "n", "returns the list [n, n - 1, ..., 1]", "return list(range(n, 0, -1))", [[3], [0], [5], [1]]),
    ("swap_pair", "a, b", "returns the tuple (b, a)", "return (b, a)", [[1, 2], ["x", "y"], [0, None]]),
    ("is_empty_list", "lst", "returns True if the list lst has no elements", "return len(lst) == 0",
     [[[]], [[1]], [[None]]]),
    ("get_value", "d, key", "returns d[key] if key is in the dictionary d, and None otherwise", "return d.get(key)",
     [[{"a": 1}, "a"], [{"a": 1}, "b"], [{}, "x"], [{"x": [1, 2]}, "x"]]),
    ("sorted_keys", "d", "returns the keys of the dictionary d as a sorted list", "return sorted(d)",
     [[{"b": 1, "a": 2}], [{}], [{"z": 0, "m": 0, "a": 0}]]),
    ("sum_dict_values", "d", "returns the sum of the values of the dictionary d, whose values are numbers",
     "return sum(d.values())", [[{"a": 1, "b": 2}], [{}], [{"x": -5, "y": 5, "z": 10}]]),
    ("count_letters", "s", "returns a dictionary mapping each character of s to the number of times it occurs",
     "out = {}\nfor ch in s:\n    out[ch] = out.get(ch, 0) + 1\nreturn out", [["hello"], [""], ["aaa"]]),
    ("invert_dict", "d", "returns a new dictionary with the keys and values of d swapped (values are unique)",
     "return {v: k for k, v in d.items()}", [[{"a": 1, "b": 2}], [{}], [{"x": "y"}]]),
]


def _source(name: str, params: str, body: str) -> str:
    lines = "\n".join("    " + line if line else "" for line in body.split("\n"))
    return f"def {name}({params}):\n{lines}\n"


def compile_function(source: str, entry_point: str) -> Callable[..., Any]:
    """Execute trusted ``source`` in a fresh namespace and return the function called ``entry_point``."""
    namespace: dict[str, Any] = {"__name__": "easy_code_reference"}
    exec(compile(source, f"<easy_code:{entry_point}>", "exec"), namespace)  # noqa: S102 - our own reference code
    return namespace[entry_point]


def _literal(value: Any, what: str) -> str:
    text = repr(value)
    try:
        back = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"{what}: {text!r} is not a Python literal") from exc
    if back != value or type(back) is not type(value):
        raise ValueError(f"{what}: {text!r} does not round-trip through ast.literal_eval")
    return text


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite float {value!r} cannot be a test value")
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(k) or _has_float(v) for k, v in value.items())
    return False


def _build_problem(task: TaskSpec) -> Problem:
    name, params, spec, body, arg_lists = task
    if not 3 <= len(arg_lists) <= 6:
        raise ValueError(f"easy task {name!r} needs 3-6 test inputs, has {len(arg_lists)}")
    source = _source(name, params, body)
    fn = compile_function(source, name)
    inputs: list[str] = []
    outputs: list[str] = []
    uses_float = False
    for i, args in enumerate(arg_lists):
        inputs.append(_literal(list(args), f"easy/{name} input {i}"))
        result = fn(*copy.deepcopy(args))
        outputs.append(_literal(result, f"easy/{name} output {i}"))
        uses_float = uses_float or _has_float(result)
    signature = f"{name}({params})"
    prompt = f"Write a Python function `{signature}` that {spec}.\n{INSTRUCTION}"
    tests = CodeTests(style="io", entry_point=name, inputs=tuple(inputs), outputs=tuple(outputs),
                      atol=FLOAT_ATOL if uses_float else 0.0)
    return Problem(problem_id=f"easy/{name}", kind="code", prompt=prompt, tests=tests, reference_solution=source,
                   metadata={"source": "easy_code", "signature": signature})


@functools.lru_cache(maxsize=1)
def _build_all() -> tuple[Problem, ...]:
    names = [task[0] for task in _TASKS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate easy task names: {duplicates}")
    return tuple(_build_problem(task) for task in _TASKS)


def easy_code_problems() -> list[Problem]:
    """All easy code tasks, in a fixed order (built once per process, then copied out of the cache)."""
    return list(_build_all())


def easy_code_split(part: str) -> list[Problem]:
    """The ``train`` or ``heldout`` part of the easy code tasks (see the module docstring)."""
    if part not in ("train", "heldout"):
        raise ValueError(f"easy_code_split: part must be 'train' or 'heldout', not {part!r}")
    names = sorted(task[0] for task in _TASKS)
    random.Random(SPLIT_SEED).shuffle(names)
    heldout = {f"easy/{name}" for name in names[:HELDOUT_SIZE]}
    return [p for p in _build_all() if (p.problem_id in heldout) == (part == "heldout")]

"""The prompts of MEL's Appendix C, verbatim in wording (line breaks and bullets restored), and the two prompts the
papers describe but do not print (MEL-Code's retrospective context, the Self-Critique baseline's instruction).

- ``META_EXPERIENCE_PROMPT`` (the instruction I): filled with the question, the incorrect solution (Solution 1) and
  the correct one (Solution 2), in the order Appendix C gives them.
- ``VALIDATION_PROMPT`` (empirical validation via replay): filled with the rendered meta-experience and the question.
- ``SELF_CRITIQUE_PROMPT`` (ours): the Self-Critique NLL baseline's instruction; it sees one failing solution only.
- ``retro_context_code`` (ours): MEL-Code's C_retro = [x, y+, y-, v-] as one user turn, without an instruction.
  v- (the verifier's result for y-: its status and detail) is our addition to the paper's [x, y+, y-]: the template
  M names the category decided from that status and quotes the detail ("returned A, expected B"), and the NLL term
  should not train the policy to state test outcomes its context does not show.
"""
from __future__ import annotations

META_EXPERIENCE_PROMPT = """\
You are a Meta-Cognitive Reasoning Analyst specializing in self-reflection, error root-cause analysis, and the \
extraction of generalizable heuristics. You are provided with multiple solution trajectories for the same problem. \
Note that the labels Correct or Incorrect apply to the final answer, but the reasoning process itself may contain \
twists and turns. Your task is to conduct a deep comparative autopsy of the thinking processes. You must identify the \
structural differences in cognition that led to success or failure, and synthesize these into abstract principles \
for future use.

Core Analysis Requirements:
1. Deep Dive into Correct Trajectories (Resilience & Robustness Analysis):
• Scenario A (Self-Correction): If you find the reasoning contains initial errors or uncertainties, look for moments \
of self-correction. What triggered the realization? What structural insight allowed the reasoning to pivot back to \
the right track?
• Scenario B (Flawless Execution): When every step of the reasoning is correct from the start, identify the \
Foundational "Immunity". What specific definition, clear knowledge representation, or disciplined step-by-step \
verification prevented this Agent from falling into the traps that the Incorrect Agent fell into?
• Goal: Extract the specific logic validation technique or robust mental representation that saved the solution.
2. Deep Dive into Incorrect Trajectories (Vulnerability Analysis):
• You must identify not only where the math/logic went wrong, but also why the reasoning drifted.
• Identify: The "Bifurcation Point" where a correct start turned into a hallucination or logic gap.
• Analyze: The latent cognitive defect (e.g., concept conflation, rigid mindset, overlooking edge cases, intuitive \
bias) that caused the error.
• Identify: What specific knowledge point or constraint was violated?
3. Comparative Synthesis:
• Contrast the Solutions and Decision Boundaries. Why did the successful trajectory avoid the trap that the failed \
one fell into?
• What structural insight did the winner have that the loser missed? (e.g., The winner treated the problem as a \
geometric issue, while the loser got stuck in algebra).
4. Strict Generalization Constraint:
• Forbidden: Do NOT mention the specific numbers, variables, or exact answer of the current problem in your \
"Heuristics" or "Reflective Summary".
• Required: Convert specific lessons into abstract heuristics (e.g., instead of "The integral of $x^2$ is...", use \
"When integrating polynomial functions..."). Formulate them as conditionally triggered rules ("If...Then...", "When \
dealing with [Concept X]...I should...").

Output Format (Strict Adherence Required)
1. Failure Resolution Path & Error Pattern Recognition (Mandatory for incorrect samples)
• Failure Point: Identify the exact step where logic diverged. Did it start correctly? Where did the drift happen?
• Latent Cognitive Pattern: Reveal the deep-seated reasoning defect. Was it a bias? A missing prerequisite? A \
misunderstanding of the prompt's intent? Do not list surface-level calculation errors.
2. Analysis of Success Factors (Mandatory for correct samples)
• Reasoning Pivot (If applicable): If the path involved self-correction, describe the moment of realization and the \
strategy used to fix it.
• Robustness Factor (If flawless): If the path was perfect, explain the fundamental concept or structural approach \
that effectively "immunized" the reasoning against common errors.
• Reason for Effectiveness: Why did this perspective work? What fundamental logic did it satisfy?
3. First-Person Reflective Summary (Mandatory)
Write a meta-cognitive reflection from the first-person perspective ("I").
• Review: Briefly review the thinking process differences.
• Insight: Discuss the specific knowledge point or cognitive habit that was critical.
• Action: Explain how you will restructure your approach to avoid the identified "Internal Reasoning Defects" in the \
future. Focus on the "How" of thinking, not the "What" of the answer.
4. Subject Heuristics (Internalized Experience) (Mandatory)
• [Pattern Name]: If [abstract condition] occurs, then [abstract action]...
• [Pattern Name]: When dealing with [concept type], I must strictly verify [constraint]...
(Note: These must be applicable to *future* problems of a similar class, completely stripped of this problem's \
specifics.)

Here the question and the corresponding solutions.
<question>
{question}
</question>
Solution 1:
<answer>
{error_ans}
</answer>
<judge>
Incorrect
</judge>
Solution 2:
<answer>
{correct_ans}
</answer>
<judge>
Correct
</judge>"""

VALIDATION_PROMPT = """\
Prior study has provided some internal reference information relevant to this question, including the key \
approaches, steps, and reasoning needed for a correct solution; the typical reasoning biases, logical flaws, or \
pitfalls that appear in incorrect solutions; and various heuristic insights on how to complete this problem more \
effectively.
{experience}
Now, please fully internalize this information as your own experience, then independently think through the problem \
in detail and produce a complete answer.
Note:
• You must perform full, in-depth reasoning internally and arrive at the final answer while making full use of the \
information above.
Answer the following question:
{question}"""

SELF_CRITIQUE_PROMPT = """\
You are reviewing your own solution to a problem. The solution below was judged Incorrect. Identify the step where \
it goes wrong, explain the root cause of the failure, and state one abstract heuristic, as an "If ... then ..." rule \
that does not mention this problem's specific names, numbers or answer, that would prevent this kind of error.

<question>
{question}
</question>
Solution:
<answer>
{error_ans}
</answer>
<judge>
Incorrect
</judge>"""


def meta_experience_prompt(question: str, y_plus: str, y_minus: str) -> str:
    return META_EXPERIENCE_PROMPT.format(question=question, error_ans=y_minus, correct_ans=y_plus)


def validation_prompt(experience: str, question: str) -> str:
    return VALIDATION_PROMPT.format(experience=experience, question=question)


def self_critique_prompt(question: str, y_minus: str) -> str:
    return SELF_CRITIQUE_PROMPT.format(question=question, error_ans=y_minus)


VERDICT_CHARS = 1000  # the verdict detail shown in C_retro (the template quotes at most 64 characters of its start)


def verdict_feedback(status: str, detail: str) -> str:
    """v-: the verifier's result for y- as C_retro shows it (its status, and its detail without the program's output,
    which the template never quotes)."""
    detail = str(detail).split(" | output:")[0].strip()[:VERDICT_CHARS]
    return f"Test result of the failing solution: {status}" + (f": {detail}" if detail else "")


def retro_context_code(question: str, y_plus: str | None, y_minus: str, minus_status: str | None = None,
                       minus_detail: str = "") -> str:
    """MEL-Code's C_retro = [x, y+, y-] (or [x, y-] without a pair) as one user turn, followed by v-
    (``verdict_feedback``) when ``minus_status`` is given."""
    parts = [f"<question>\n{question}\n</question>"]
    if y_plus is not None:
        parts.append(f"Passing solution:\n<answer>\n{y_plus}\n</answer>")
    parts.append(f"Failing solution:\n<answer>\n{y_minus}\n</answer>")
    if minus_status is not None:
        parts.append(verdict_feedback(minus_status, minus_detail))
    return "\n".join(parts)

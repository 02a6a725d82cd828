"""Tools: plain Python functions with Pydantic input and output models, registered by name.

Agents name the tools they may call in their definitions (``tools: [financial_model]``);
:mod:`convergio.tools.registry` looks them up, validates arguments, runs them and wraps
them as AutoGen ``FunctionTool`` objects. The shipped tools live in
:mod:`convergio.tools.financial`.
"""

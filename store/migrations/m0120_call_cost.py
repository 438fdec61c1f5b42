"""Cost per model call: USD from the call's token counts and its model's price; NULL when the price is unknown."""


def migrate(db):
    db["llm_calls"].add_column("cost_usd", float)

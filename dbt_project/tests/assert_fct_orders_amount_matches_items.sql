{{ config(meta={'dagster': {'ref': {'name': 'fct_orders'}}}) }}
-- The shop sums lines in whole cents, so every order's amount equals the sum of its lines.
select order_id, amount, items_amount
from {{ ref('fct_orders') }}
where abs(amount - items_amount) > 0.005

-- One row per order that has lines: how many lines and units, and what they add up to.
select
    order_id,
    count(*) as item_lines,
    sum(quantity) as items_quantity,
    {{ round_float('sum(line_amount)', 2) }} as items_amount
from {{ ref('stg_shop__order_items') }}
group by order_id

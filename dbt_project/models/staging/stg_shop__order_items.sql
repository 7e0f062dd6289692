select
    order_id,
    line_no,
    product_id,
    quantity,
    unit_price,
    {{ round_float('quantity * unit_price', 2) }} as line_amount
from {{ source('shop', 'order_items') }}

select
    order_id,
    line_no,
    product_id,
    quantity,
    unit_price,
    round(quantity * unit_price, 2) as line_amount
from {{ source('shop', 'order_items') }}

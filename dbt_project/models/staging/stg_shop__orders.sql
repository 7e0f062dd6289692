select
    order_id,
    customer_id,
    order_ts,
    cast(order_ts as date) as order_date,
    status,
    currency,
    amount,
    status <> 'cancelled' as is_revenue,
    updated_at
from {{ source('shop', 'orders') }}

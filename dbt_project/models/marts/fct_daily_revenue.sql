select
    order_date,
    count(*) as orders,
    count(*) filter (where not is_revenue) as cancelled_orders,
    round(coalesce(sum(amount) filter (where is_revenue), 0), 2) as revenue,
    round(avg(amount) filter (where is_revenue), 2) as average_order_value
from {{ ref('stg_shop__orders') }}
group by order_date

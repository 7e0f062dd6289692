select
    order_date,
    count(*) as orders,
    count(case when not is_revenue then 1 end) as cancelled_orders,
    {{ round_float('coalesce(sum(case when is_revenue then amount end), 0)', 2) }} as revenue,
    {{ round_float('avg(case when is_revenue then amount end)', 2) }} as average_order_value
from {{ ref('stg_shop__orders') }}
group by order_date
